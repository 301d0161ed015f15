import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

const page = (name: string) => fileURLToPath(new URL(name, import.meta.url));

// Under `vite` (dev) the pages are served from elsewhere than a node, and
// talk only to their own origin: this forwards the API and the WebSocket
// to a node (`CHAT_NODE=http://127.0.0.1:8081 npx vite` for another one).
const node = process.env.CHAT_NODE ?? "http://127.0.0.1:8080";

// Two pages: the chat app (`/`) and the operators' console, which a node
// serves at `/admin`. Preact's JSX through esbuild: no Babel preset needed.
export default defineConfig({
  esbuild: { jsx: "automatic", jsxImportSource: "preact" },
  build: {
    outDir: "dist",
    emptyOutDir: true,
    // A production build ships no sources (the node refuses `.map` anyway).
    sourcemap: false,
    rollupOptions: {
      input: { index: page("index.html"), admin: page("admin.html") },
      // What both pages load (Preact, api.ts, style.css) in one named chunk.
      output: { manualChunks: (id) => (/node_modules|modulepreload-polyfill|\/src\/(api\.ts|style\.css)$/.test(id) ? "shared" : undefined) },
    },
  },
  server: { proxy: { "/v1": { target: node, ws: true } } },
  preview: { proxy: { "/v1": { target: node, ws: true } } },
  plugins: [
    {
      // `/admin` as the node serves it, under `vite` and `vite preview` too.
      name: "admin-route",
      configureServer(server) {
        server.middlewares.use((req, _res, next) => {
          if (req.url === "/admin" || req.url?.startsWith("/admin?")) req.url = req.url.replace("/admin", "/admin.html");
          next();
        });
      },
      configurePreviewServer(server) {
        server.middlewares.use((req, _res, next) => {
          if (req.url === "/admin" || req.url?.startsWith("/admin?")) req.url = req.url.replace("/admin", "/admin.html");
          next();
        });
      },
    },
  ],
});

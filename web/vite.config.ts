import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

const page = (name: string) => fileURLToPath(new URL(name, import.meta.url));

// Two pages: the chat app (`/`) and the operators' console, which a node
// serves at `/admin`. Preact's JSX through esbuild: no Babel preset needed.
export default defineConfig({
  esbuild: { jsx: "automatic", jsxImportSource: "preact" },
  build: {
    outDir: "dist",
    emptyOutDir: true,
    sourcemap: true,
    rollupOptions: {
      input: { index: page("index.html"), admin: page("admin.html") },
      // What both pages load (Preact, api.ts, style.css) in one named chunk.
      output: { manualChunks: (id) => (/node_modules|modulepreload-polyfill|\/src\/(api\.ts|style\.css)$/.test(id) ? "shared" : undefined) },
    },
  },
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

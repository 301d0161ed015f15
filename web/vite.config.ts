import { defineConfig } from "vite";

// Preact's JSX through esbuild: no Babel preset needed.
export default defineConfig({
  esbuild: { jsx: "automatic", jsxImportSource: "preact" },
  build: { outDir: "dist", emptyOutDir: true, sourcemap: true },
});

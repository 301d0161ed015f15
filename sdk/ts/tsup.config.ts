import { defineConfig } from "tsup";

// One ESM entry with its type declarations; the MessagePack codec stays a
// dependency (not bundled) so an app shares one copy.
export default defineConfig({
  entry: ["src/index.ts"],
  format: ["esm"],
  dts: true,
  sourcemap: false,
  clean: true,
  target: "es2022",
});

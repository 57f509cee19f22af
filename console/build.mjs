// Bundles the console into ../src/console/assets/, the files the binary embeds.
// Deterministic: the same sources and the pinned esbuild give the same bytes, which
// scripts/test checks against the committed files.
import { build } from "esbuild";
import { copyFileSync, mkdirSync } from "node:fs";

const out = new URL("../src/console/assets/", import.meta.url).pathname;
mkdirSync(out, { recursive: true });
await build({
  entryPoints: ["src/main.ts"],
  bundle: true,
  minify: true,
  format: "esm",
  target: ["es2022"],
  legalComments: "none",
  charset: "utf8",
  outfile: `${out}app.js`,
  logLevel: "warning",
});
for (const file of ["index.html", "app.css", "favicon.svg"]) {
  copyFileSync(new URL(`src/${file}`, import.meta.url), `${out}${file}`);
}

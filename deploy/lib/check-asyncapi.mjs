// Validates AsyncAPI documents with the AsyncAPI parser (the one the AsyncAPI CLI and Studio use), from the
// validators' npm prefix (deploy/install-tools.sh). Prints every diagnostic; exits 1 if any is an error or a
// warning.
//
//   NODE_PATH=<tools>/npm/node_modules node deploy/lib/check-asyncapi.mjs proto/asyncapi.json
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const { Parser } = require(require.resolve("@asyncapi/parser", { paths: (process.env.NODE_PATH || "").split(":") }));

const ERROR = 0;
const WARNING = 1;
let failed = false;
for (const path of process.argv.slice(2)) {
  const { document, diagnostics } = await new Parser().parse(readFileSync(path, "utf8"), { source: path });
  for (const d of diagnostics) {
    console.log(`${path}: ${["error", "warning", "info", "hint"][d.severity]}: ${d.code}: ${d.message} at ${d.path.join(".")}`);
    failed ||= d.severity === ERROR || d.severity === WARNING;
  }
  if (!document) failed = true;
  else console.log(`${path}: AsyncAPI ${document.version()}, ${document.allMessages().length} messages`);
}
process.exit(failed ? 1 : 0);

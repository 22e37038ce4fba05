// Expands an Adaptive Card template with data, as Copilot does for a plugin's response_semantics:
// reads {"template": {...}, "data": {...}} on stdin, writes the expanded card on stdout.
// Uses the templating library Microsoft ships (npm adaptivecards-templating).
const ACData = require("adaptivecards-templating");

let input = "";
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", () => {
  const { template, data } = JSON.parse(input);
  const card = new ACData.Template(template).expand({ $root: data });
  process.stdout.write(JSON.stringify(card));
});

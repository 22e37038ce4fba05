// The Agents Toolkit's own OpenAPI reader (npm @microsoft/m365-spec-parser, pinned), run offline on
// one description: prints its validation and its list of operations as JSON, for the test suite.
// Copilot mode, with what an API plugin with OAuth uses allowed (the Toolkit's settings for an
// API plugin): GET and POST, several parameters, OAuth 2.0 authorization code, response semantics.
"use strict";
const { SpecParser, ProjectType } = require("@microsoft/m365-spec-parser");

(async () => {
  const parser = new SpecParser(process.argv[2], {
    projectType: ProjectType.Copilot,
    allowOauth2: true,
    allowMethods: ["get", "post"],
    allowMultipleParameters: true,
    allowResponseSemantics: true,
    allowConversationStarters: true,
    allowConfirmation: true,
  });
  const validation = await parser.validate();
  const listed = validation.status === 2 ? null : await parser.list();
  process.stdout.write(JSON.stringify({ validation, listed }));
})().catch((error) => {
  process.stderr.write(String(error && error.stack ? error.stack : error));
  process.exit(3);
});

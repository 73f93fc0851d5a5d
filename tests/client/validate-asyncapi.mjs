// Validates an AsyncAPI document with the AsyncAPI project's own parser (its ruleset included:
// any error or warning fails), then checks every message example against its payload schema,
// so the examples the api serialises from its wire types must fit the schemas it derives
// from the same types. Usage: node validate-asyncapi.mjs asyncapi.json
import { readFileSync } from "node:fs";
import { Parser } from "@asyncapi/parser";
import Ajv from "ajv";
import addFormats from "ajv-formats";

const file = process.argv[2];
const text = readFileSync(file, "utf8");
const { document, diagnostics } = await new Parser().parse(text);
const serious = diagnostics.filter((d) => d.severity <= 1);
for (const d of diagnostics) {
  const level = ["error", "warning", "info", "hint"][d.severity];
  console.log(`${level} ${d.code} at ${d.path.join(".")}: ${d.message}`);
}
if (!document || serious.length > 0) {
  console.log(`asyncapi: ${serious.length} errors or warnings`);
  process.exit(1);
}

const raw = JSON.parse(text);
const ajv = new Ajv({ strict: false, allErrors: true, validateSchema: false });
addFormats(ajv);
// OpenAPI's numeric formats, which JSON Schema leaves open: nothing to check beyond `type`.
for (const format of ["int32", "int64", "uint32", "uint64", "float", "double"]) {
  ajv.addFormat(format, true);
}
ajv.addSchema(raw, "asyncapi");
let examples = 0;
const failures = [];
for (const [key, message] of Object.entries(raw.components.messages)) {
  const validate = ajv.compile({ $ref: `asyncapi#/components/messages/${key}/payload` });
  for (const example of message.examples ?? []) {
    examples += 1;
    if (!validate(example.payload)) {
      failures.push(`${key} example ${example.name}: ${ajv.errorsText(validate.errors)}`);
    }
  }
}
for (const failure of failures) console.log(failure);
console.log(
  `asyncapi: valid ${raw.asyncapi}, ${document.allMessages().length} messages, ` +
    `${examples} examples, ${failures.length} not matching their schema`,
);
process.exit(failures.length === 0 ? 0 : 1);

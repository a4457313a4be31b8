/**
 * The text of office documents (Office Open XML: Word, Excel and PowerPoint), read by
 * `OfficeText.ts` on a worker thread of its own (`TextWorker.ts`), as a PDF's is: inflating and
 * scanning a large document's XML takes CPU time that must not hold up the event loop (measured:
 * 0.13–0.17 s to the first 100,000 characters of a 48 MiB `document.xml`, uploaded as 0.5 MiB;
 * about 1 s to find no text in 48 MiB of markup, uploaded as 0.16 MiB), and a hostile one must not
 * take the server's memory.
 */
import { Effect } from "effect"
import { createRequire } from "node:module"
import * as Path from "node:path"
import { pathToFileURL } from "node:url"
import { officeKindOf, TextUnreadable } from "./Content.js"
import type { OfficeLimits } from "./OfficeText.js"
import { textOnWorker } from "./TextWorker.js"

/** What a document may hold: past these, it is refused (`maxChars` is the caller's). */
export const officeLimits: Omit<OfficeLimits, "maxChars"> = { maxEntries: 10_000, maxPartBytes: 50 * 1024 * 1024 }

/**
 * tsx's ESM API (the `import` entry of `tsx/esm/api`; on Node 20, tsx's hooks are not registered in
 * worker threads, and the API's `require` entry cannot register them).
 */
const tsxApi = (): string => {
  const require = createRequire(import.meta.url)
  const manifest = require.resolve("tsx/package.json")
  const { exports } = require(manifest) as { exports: Record<string, { import: { default: string } }> }
  return pathToFileURL(Path.join(Path.dirname(manifest), exports["./esm/api"]!.import.default)).href
}

// The worker loads the reader beside this module: compiled JavaScript in production; under tsx
// (`npm start`) and the tests, the TypeScript source, which it can only load through tsx.
const fromSource = import.meta.url.endsWith(".ts")
const reader = new URL(fromSource ? "./OfficeText.ts" : "./OfficeText.js", import.meta.url).href
const tsx = fromSource ? tsxApi() : undefined

const workerSource = `
const { parentPort, workerData } = require("node:worker_threads")
const read = async () => {
  if (workerData.tsx) (await import(workerData.tsx)).register()
  const { readOfficeText } = await import(workerData.reader)
  return readOfficeText(workerData.bytes, workerData.kind, workerData.limits)
}
read().then((text) => parentPort.postMessage({ text }), (error) => parentPort.postMessage({ error: String(error && error.message || error) }))
`

/**
 * The first `maxChars` characters (about: a little more may come) of an office document's text:
 * paragraphs, slides (headed "Slide n") and sheets' rows (headed "Sheet: <name>") as lines.
 */
export const officeText = (
  bytes: Uint8Array,
  contentType: string,
  maxChars: number
): Effect.Effect<string, TextUnreadable> => {
  const kind = officeKindOf(contentType)
  if (kind === undefined) return Effect.fail(new TextUnreadable({ reason: `${contentType} is not an office document` }))
  return textOnWorker(workerSource, { reader, tsx, bytes, kind, limits: { ...officeLimits, maxChars } })
}

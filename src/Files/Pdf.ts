/**
 * The text of a PDF, read by pdf.js (through `unpdf`) on a worker thread of its own (`TextWorker.ts`).
 */
import type { Effect } from "effect"
import { createRequire } from "node:module"
import type { TextUnreadable } from "./Content.js"
import { textOnWorker } from "./TextWorker.js"

const unpdf = createRequire(import.meta.url).resolve("unpdf")

const workerSource = `
const { parentPort, workerData } = require("node:worker_threads")
const { extractText, getDocumentProxy } = require(workerData.unpdf)
getDocumentProxy(workerData.bytes)
  .then((document) => extractText(document, { mergePages: true }))
  .then(({ text }) => parentPort.postMessage({ text }), (error) => parentPort.postMessage({ error: String(error && error.message || error) }))
`

export const pdfText = (bytes: Uint8Array): Effect.Effect<string, TextUnreadable> =>
  textOnWorker(workerSource, { unpdf, bytes })

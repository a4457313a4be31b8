/**
 * What an uploaded file is, decided from its bytes rather than from what the client claims, and the
 * name it is kept under.
 */
import { Data } from "effect"
import { fileTypeFromBuffer } from "file-type"
import type { OfficeKind } from "./OfficeText.js"

const maxNameLength = 255

/** How many bytes from a file's start its type is decided on (what `file-type` reads at most). */
export const sniffLength = 4100

/**
 * `text` cut to `max` UTF-16 units (what the schemas' and columns' length checks count), never
 * between the two halves of a character.
 */
export const cutText = (text: string, max: number): string => {
  const kept = text.slice(0, max)
  return /[\uD800-\uDBFF]$/.test(kept) ? kept.slice(0, -1) : kept
}

/**
 * A name safe to keep and to send back in `Content-Disposition`: the last path segment only, no
 * control characters or characters that file systems reserve, no leading or trailing dots and
 * spaces, NFC, at most 255 UTF-16 units (the extension kept when it has to be shortened).
 */
export const sanitizeFileName = (raw: string): string => {
  const segment = raw.split(/[\\/]/).pop() ?? ""
  const cleaned = segment
    .normalize("NFC")
    .replace(/[\u0000-\u001f\u007f-\u009f<>:"|?*]/g, "_")
    .replace(/\s+/g, " ")
    .replace(/^[\s.]+|[\s.]+$/g, "")
  if (cleaned.length === 0) return "file"
  // 255 UTF-16 units, as the schema counts (PostgreSQL and SQLite count characters: fewer).
  if (cleaned.length <= maxNameLength) return cleaned
  const dot = cleaned.lastIndexOf(".")
  const extension = dot > 0 && cleaned.length - dot <= 16 ? cleaned.slice(dot) : ""
  return cutText(cleaned, maxNameLength - extension.length) + extension
}

/** Text types told apart by the name's extension, once the content is known to be text. */
const textTypes: Record<string, string> = {
  md: "text/markdown",
  markdown: "text/markdown",
  csv: "text/csv",
  tsv: "text/tab-separated-values",
  json: "application/json",
  html: "text/html",
  htm: "text/html",
  xml: "text/xml",
  yaml: "text/yaml",
  yml: "text/yaml"
}

/**
 * The content type of a file: a binary format recognised by its signature (`file-type`), else, for
 * content that is valid UTF-8 without NUL bytes, a text type (its subtype from the extension among
 * a few, `text/plain` otherwise), else `application/octet-stream`. The extension alone never makes
 * a file anything but text.
 */
export const detectContentType = async (head: Uint8Array, isText: boolean, name: string): Promise<string> => {
  const detected = await fileTypeFromBuffer(head)
  if (detected !== undefined) return detected.mime
  if (!isText) return "application/octet-stream"
  const dot = name.lastIndexOf(".")
  const extension = dot >= 0 ? name.slice(dot + 1).toLowerCase() : ""
  return textTypes[extension] ?? "text/plain"
}

/** Word, Excel and PowerPoint documents (Office Open XML), whose text `Office.ts` reads, by content type. */
const officeKinds: ReadonlyMap<string, OfficeKind> = new Map([
  ["application/vnd.openxmlformats-officedocument.wordprocessingml.document", "docx"],
  ["application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "xlsx"],
  ["application/vnd.openxmlformats-officedocument.presentationml.presentation", "pptx"]
])

/** The kind of office document a file of this type is, if it is one. */
export const officeKindOf = (contentType: string): OfficeKind | undefined => officeKinds.get(contentType)

/** Whether a file of this type has text that can be read out of it (for analyses, attachments, the graph). */
export const hasReadableText = (contentType: string): boolean =>
  contentType.startsWith("text/") || contentType === "application/json" || contentType === "application/pdf" ||
  officeKinds.has(contentType)

/** The content's text could not be read (a malformed or encrypted document, a read that took too long). */
export class TextUnreadable extends Data.TaggedError("TextUnreadable")<{ readonly reason: string }> {}

/** Image types models take in a chat (OpenAI, Anthropic and Ollama's vision models all read these). */
const seenImageTypes = new Set(["image/png", "image/jpeg", "image/gif", "image/webp"])

/** Whether a file is an image a model can be shown. */
export const isSeenImage = (contentType: string): boolean => seenImageTypes.has(contentType)

/** Whether `contentType` is among `allowed` (`text/*` allows every `text/…` type). */
export const isAllowedType = (contentType: string, allowed: ReadonlyArray<string>): boolean =>
  allowed.some((pattern) =>
    pattern === "*/*" || pattern === contentType ||
    (pattern.endsWith("/*") && contentType.startsWith(pattern.slice(0, -1)))
  )

/**
 * Checks a stream of bytes for text as it passes: valid UTF-8 (a character may span chunks) and no
 * NUL byte.
 */
export const textChecker = () => {
  const decoder = new TextDecoder("utf-8", { fatal: true })
  let text = true
  return {
    update: (chunk: Uint8Array) => {
      if (!text) return
      if (chunk.includes(0)) {
        text = false
        return
      }
      try {
        decoder.decode(chunk, { stream: true })
      } catch {
        text = false
      }
    },
    isText: (): boolean => {
      if (!text) return false
      try {
        decoder.decode()
        return true
      } catch {
        return false
      }
    }
  }
}

/**
 * Multipart bodies whose file names are not Latin-1, as browsers send them: a part's
 * `Content-Disposition: form-data; name="file"; filename="Отчёт.pdf"` carries the name as raw
 * UTF-8. The parser under `@effect/platform`'s multipart (multipasta) reads that header only when
 * every character of it is Latin-1, and drops the whole header otherwise: the part would lose its
 * name and its file, and the upload would answer 422.
 *
 * `utf8FileNames` sits between the request and the parser and rewrites, in the header block of
 * each part only, such a `filename="…"` as RFC 6266 wants it: `filename="Otch_t.pdf";
 * filename*=UTF-8''%D0%9E…`, which the parser reads (`filename*` first). Everything else passes
 * through byte for byte; a body whose headers are all ASCII is not copied at all.
 */
import { Transform } from "node:stream"

/** A part's headers larger than this are not real ones: they are passed on as they are. */
const maxHeaderBytes = 16 * 1024

const crlfcrlf = Buffer.from("\r\n\r\n", "latin1")

/** The quoted `filename` parameter of a header line (its value with `\"`-escapes). */
const quotedFileName = /;\s*filename\s*=\s*"((?:[^"\\]|\\.)*)"/i

const nonAscii = /[^\x00-\x7f]/

/** Percent-encodes all but RFC 5987's attr-chars, which the parser's token pattern accepts. */
const extendedValue = (text: string): string =>
  encodeURIComponent(text).replace(/['()*!]/g, (char) => `%${char.charCodeAt(0).toString(16).toUpperCase()}`)

/** A header line with its non-ASCII quoted `filename` restated as `filename` (ASCII) and `filename*` (UTF-8). */
const restateLine = (line: string): string => {
  if (!/^content-disposition\s*:/i.test(line)) return line
  const match = quotedFileName.exec(line)
  if (match === null || !nonAscii.test(match[1]!)) return line
  const name = match[1]!.replace(/\\(.)/g, "$1")
  const fallback = name.replace(/[^\x20-\x7e]/g, "_").replace(/["\\]/g, "_")
  return `${line.slice(0, match.index)}; filename="${fallback}"; filename*=UTF-8''${extendedValue(name)}${
    line.slice(match.index + match[0].length)
  }`
}

/** A part's header block (up to and including its blank line), restated when it holds non-ASCII file names. */
const restateHeaders = (block: Buffer): Buffer => {
  if (!block.some((byte) => byte > 0x7f)) return block
  const text = block.toString("utf8")
  const restated = text.split("\r\n").map(restateLine).join("\r\n")
  return restated === text ? block : Buffer.from(restated, "utf8")
}

/**
 * A pass-through for a `multipart/form-data` body with this `boundary` that restates non-Latin-1
 * file names in its parts' headers (see the module's comment).
 */
export const utf8FileNames = (boundary: string): Transform => {
  // Every part starts after a delimiter: CRLF, "--" and the boundary (the first one at the very
  // start of the body, without the CRLF, which is taken as read).
  const delimiter = Buffer.from(`\r\n--${boundary}`, "latin1")
  let pending: Buffer = Buffer.from("\r\n", "latin1")
  /** Bytes of `pending` that are not in the body (the CRLF before the first delimiter). */
  let virtual = 2
  let inHeaders = false

  const emit = (self: Transform, bytes: Buffer) => {
    const real = virtual > 0 ? bytes.subarray(Math.min(virtual, bytes.length)) : bytes
    virtual = Math.max(0, virtual - bytes.length)
    if (real.length > 0) self.push(real)
  }

  return new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk])
      while (pending.length > 0) {
        if (inHeaders) {
          const end = pending.indexOf(crlfcrlf)
          if (end >= 0 && end + crlfcrlf.length <= maxHeaderBytes) {
            emit(this, restateHeaders(pending.subarray(0, end + crlfcrlf.length)))
            pending = pending.subarray(end + crlfcrlf.length)
            inHeaders = false
            continue
          }
          if (end < 0 && pending.length <= maxHeaderBytes) break
          // Too long to be headers, however the body was cut: read on as body, as they are.
          inHeaders = false
        } else {
          const found = pending.indexOf(delimiter)
          if (found < 0) {
            // All but what could be the start of a delimiter split across chunks.
            const keep = Math.min(pending.length, delimiter.length - 1)
            emit(this, pending.subarray(0, pending.length - keep))
            pending = Buffer.from(pending.subarray(pending.length - keep))
            break
          }
          emit(this, pending.subarray(0, found + delimiter.length))
          pending = pending.subarray(found + delimiter.length)
          inHeaders = true
        }
      }
      callback()
    },
    flush(callback) {
      emit(this, pending)
      pending = Buffer.alloc(0)
      callback()
    }
  })
}

/**
 * `utf8FileNames`, the pass-through that restates non-Latin-1 file names in a multipart body's
 * part headers: exact output for any split of the body into chunks, byte-identical bodies when
 * nothing needs restating, and file contents never touched.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Crypto from "node:crypto"
import { Readable } from "node:stream"
import { text } from "node:stream/consumers"
import { utf8FileNames } from "../src/Files/FileNames.js"

const boundary = "----formdata-test-7MA4YWxkTrZu0gW"

const part = (disposition: string, type: string, content: Buffer) =>
  Buffer.concat([
    Buffer.from(`--${boundary}\r\nContent-Disposition: ${disposition}\r\nContent-Type: ${type}\r\n\r\n`, "utf8"),
    content,
    Buffer.from("\r\n", "latin1")
  ])

const body = (...parts: ReadonlyArray<Buffer>) =>
  Buffer.concat([...parts, Buffer.from(`--${boundary}--\r\n`, "latin1")])

/** The body through the transform, cut into chunks at `cuts`. */
const through = async (input: Buffer, cuts: ReadonlyArray<number>): Promise<Buffer> => {
  const pieces: Array<Buffer> = []
  let from = 0
  for (const cut of [...cuts].sort((a, b) => a - b)) {
    pieces.push(input.subarray(from, cut))
    from = cut
  }
  pieces.push(input.subarray(from))
  const out: Array<Buffer> = []
  const transform = Readable.from(pieces.filter((piece) => piece.length > 0)).pipe(utf8FileNames(boundary))
  for await (const chunk of transform) out.push(chunk as Buffer)
  return Buffer.concat(out)
}

const randomCuts = (length: number, count: number) =>
  Array.from({ length: count }, () => Crypto.randomInt(0, length + 1))

// Bytes that look like the start of a delimiter, and every byte value.
const binary = Buffer.concat([
  Buffer.from(`\r\n--${boundary.slice(0, 10)}\r\n\r\n--`, "latin1"),
  Buffer.from(Array.from({ length: 256 }, (_, index) => index)),
  Crypto.randomBytes(4096)
])

describe("utf8FileNames", () => {
  it("leaves a body whose headers are ASCII as it is, however it is cut", async () => {
    const input = body(
      part("form-data; name=\"note\"", "text/plain", Buffer.from("a field")),
      part("form-data; name=\"file\"; filename=\"plain.bin\"", "application/octet-stream", binary)
    )
    for (let round = 0; round < 50; round++) {
      expect((await through(input, randomCuts(input.length, 6))).equals(input)).toBe(true)
    }
    // Every byte alone.
    expect((await through(input, Array.from({ length: input.length }, (_, index) => index))).equals(input)).toBe(true)
  })

  it("restates a non-ASCII quoted file name as an ASCII one and filename*, the content untouched", async () => {
    const name = "Отчёт (итог) 2026 — 完成 🎉's.bin"
    const input = body(
      part(`form-data; name="file"; filename="${name}"`, "application/octet-stream", binary),
      part("form-data; name=\"other\"; filename=\"ascii.txt\"", "text/plain", Buffer.from("ünïcode content stays"))
    )
    const encoded = "%D0%9E%D1%82%D1%87%D1%91%D1%82%20%28%D0%B8%D1%82%D0%BE%D0%B3%29%202026%20%E2%80%94%20" +
      "%E5%AE%8C%E6%88%90%20%F0%9F%8E%89%27s.bin"
    const expected = body(
      part(
        `form-data; name="file"; filename="_____ (____) 2026 _ __ __'s.bin"; filename*=UTF-8''${encoded}`,
        "application/octet-stream",
        binary
      ),
      part("form-data; name=\"other\"; filename=\"ascii.txt\"", "text/plain", Buffer.from("ünïcode content stays"))
    )
    for (let round = 0; round < 50; round++) {
      const output = await through(input, randomCuts(input.length, 8))
      expect(output.equals(expected), output.toString("latin1").slice(0, 300)).toBe(true)
    }
    expect(decodeURIComponent(encoded)).toBe(name)
  })

  it("passes on a preamble, and headers too long to be headers, as they are", async () => {
    const preamble = Buffer.from("This is a preamble ё\r\n", "utf8")
    const long = part(`form-data; name="file"; filename="${"я".repeat(10_000)}"`, "text/plain", Buffer.from("x"))
    const input = Buffer.concat([preamble, body(long)])
    for (let round = 0; round < 50; round++) {
      expect((await through(input, randomCuts(input.length, 5))).equals(input)).toBe(true)
    }
    expect(await text(Readable.from([Buffer.alloc(0)]).pipe(utf8FileNames(boundary)))).toBe("")
  })
})

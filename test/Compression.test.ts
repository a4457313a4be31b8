/**
 * Compressed responses: Brotli or gzip as the client's `Accept-Encoding` says,
 * for bodies known in full above `COMPRESSION_MIN_SIZE`; never for streams
 * (the chat's Server-Sent Events), small bodies, or with `COMPRESSION=false`.
 * Read with node:http, which leaves the bytes as they came.
 */
import { describe, expect, it, layer } from "@effect/vitest"
import { Effect } from "effect"
import * as Http from "node:http"
import * as Zlib from "node:zlib"
import { chooseEncoding } from "../src/Http/Compression.js"
import { signUp } from "./fixtures/Auth.js"
import { TestServer, testServer } from "./fixtures/Server.js"

interface Raw {
  readonly status: number
  readonly headers: Http.IncomingHttpHeaders
  readonly body: Buffer
}

/** A request whose answer's bytes are kept as they came (first chunk only for a stream: `firstChunk`). */
const fetchRaw = (
  path: string,
  options: { readonly headers?: Record<string, string>; readonly method?: string; readonly body?: string } = {},
  firstChunk = false
) =>
  Effect.flatMap(TestServer, ({ baseUrl }) =>
    Effect.async<Raw, Error>((resume) => {
      const request = Http.request(`${baseUrl}${path}`, {
        method: options.method ?? "GET",
        headers: options.headers,
        agent: false
      })
      request.on("response", (response) => {
        const chunks: Array<Buffer> = []
        const done = () =>
          resume(
            Effect.succeed({ status: response.statusCode ?? 0, headers: response.headers, body: Buffer.concat(chunks) })
          )
        response.on("data", (chunk: Buffer) => {
          chunks.push(chunk)
          if (firstChunk) {
            response.destroy()
            done()
          }
        })
        response.on("end", done)
      })
      request.on("error", (error) => resume(Effect.fail(error)))
      request.end(options.body)
      return Effect.sync(() => request.destroy())
    }))

const decode = (raw: Raw) =>
  raw.headers["content-encoding"] === "br"
    ? Zlib.brotliDecompressSync(raw.body)
    : raw.headers["content-encoding"] === "gzip"
    ? Zlib.gunzipSync(raw.body)
    : raw.body

describe("choosing the encoding", () => {
  it("prefers Brotli, honours weights, and answers none when nothing fits", () => {
    expect(chooseEncoding(undefined)).toBe(null)
    expect(chooseEncoding("gzip, deflate, br")).toBe("br")
    expect(chooseEncoding("gzip")).toBe("gzip")
    expect(chooseEncoding("br;q=0, gzip")).toBe("gzip")
    expect(chooseEncoding("br;q=0.5, gzip;q=0.8")).toBe("gzip")
    expect(chooseEncoding("identity")).toBe(null)
    expect(chooseEncoding("deflate")).toBe(null)
    expect(chooseEncoding("*")).toBe("br")
    expect(chooseEncoding("*;q=0, gzip")).toBe("gzip")
    expect(chooseEncoding("GZIP;Q=1")).toBe("gzip")
  })
})

layer(testServer({ env: { DEVELOPMENT_MODEL: "true" } }), { excludeTestServices: true })(
  "compressed responses",
  (it) => {
    it.effect("a large JSON body comes as Brotli or gzip, as accepted, and decodes to the same bytes", () =>
      Effect.gen(function*() {
        const plain = yield* fetchRaw("/openapi.json")
        expect(plain.status).toBe(200)
        expect(plain.headers["content-encoding"]).toBeUndefined()
        expect(plain.headers.vary).toMatch(/accept-encoding/i)
        for (const [accept, encoding] of [["gzip, deflate, br", "br"], ["gzip", "gzip"], ["br;q=0, gzip", "gzip"]]) {
          const compressed = yield* fetchRaw("/openapi.json", { headers: { "accept-encoding": accept! } })
          expect(compressed.status).toBe(200)
          expect(compressed.headers["content-encoding"], accept).toBe(encoding)
          expect(compressed.headers.vary).toMatch(/accept-encoding/i)
          expect(compressed.headers["content-type"]).toBe(plain.headers["content-type"])
          expect(Number(compressed.headers["content-length"])).toBe(compressed.body.byteLength)
          expect(compressed.body.byteLength).toBeLessThan(plain.body.byteLength / 5)
          expect(decode(compressed).equals(plain.body)).toBe(true)
        }
        // Asked for none: none.
        const identity = yield* fetchRaw("/openapi.json", { headers: { "accept-encoding": "identity" } })
        expect(identity.headers["content-encoding"]).toBeUndefined()
        expect(identity.body.equals(plain.body)).toBe(true)
      }))

    it.effect("small bodies, errors included, go out as they are", () =>
      Effect.gen(function*() {
        const live = yield* fetchRaw("/health/live", { headers: { "accept-encoding": "br, gzip" } })
        expect(live.status).toBe(200)
        expect(live.headers["content-encoding"]).toBeUndefined()
        expect(JSON.parse(live.body.toString("utf8"))).toMatchObject({ status: "live" })
        const missing = yield* fetchRaw("/api/v1/nothing-here", { headers: { "accept-encoding": "gzip" } })
        expect(missing.status).toBe(404)
        expect(missing.headers["content-encoding"]).toBeUndefined()
      }))

    it.effect("a streamed answer (Server-Sent Events) is never compressed", () =>
      Effect.gen(function*() {
        yield* signUp() // the administrator
        const user = yield* signUp()
        const stream = yield* fetchRaw("/api/v1/chat", {
          method: "POST",
          headers: {
            "accept-encoding": "br, gzip",
            accept: "text/event-stream",
            "content-type": "application/json",
            authorization: `Bearer ${user.accessToken}`
          },
          body: JSON.stringify({ content: "stream me ".repeat(300) })
        }, true)
        expect(stream.status).toBe(200)
        expect(stream.headers["content-type"]).toMatch(/^text\/event-stream/)
        expect(stream.headers["content-encoding"]).toBeUndefined()
        expect(stream.body.toString("utf8")).toMatch(/^id: 1\nevent: start\n/)
      }))
  }
)

layer(testServer({ env: { COMPRESSION: "false" } }), { excludeTestServices: true })(
  "with COMPRESSION=false",
  (it) => {
    it.effect("nothing is compressed", () =>
      Effect.gen(function*() {
        const response = yield* fetchRaw("/openapi.json", { headers: { "accept-encoding": "br, gzip" } })
        expect(response.status).toBe(200)
        expect(response.headers["content-encoding"]).toBeUndefined()
        expect(JSON.parse(response.body.toString("utf8"))).toMatchObject({ openapi: "3.1.0" })
      }))
  }
)

/**
 * Compressed responses, for clients that say they take them (`Accept-Encoding`):
 * Brotli when accepted, else gzip. Only bodies known in full (JSON, text, the
 * OpenAPI document and its reference page) of `COMPRESSION_MIN_SIZE` or more
 * are compressed, off the event loop (zlib's thread pool). Streams (the chat's
 * Server-Sent Events, the gateway's streamed completions) and WebSockets are
 * left alone: compressing them would hold back each event until a block fills.
 * `COMPRESSION=false` turns it off (behind a proxy that compresses, say).
 */
import { Headers, HttpApp, HttpBody, HttpMiddleware, HttpServerRequest, HttpServerResponse } from "@effect/platform"
import { Effect } from "effect"
import * as Zlib from "node:zlib"

export type Encoding = "br" | "gzip"

/** The encoding to answer `accept` (an `Accept-Encoding` header) with: Brotli if it takes it, else gzip, else none. */
export const chooseEncoding = (accept: string | undefined): Encoding | null => {
  if (accept === undefined) return null
  const weights = new Map<string, number>()
  for (const part of accept.toLowerCase().split(",")) {
    const [name = "", ...parameters] = part.split(";").map((item) => item.trim())
    const q = parameters.find((parameter) => parameter.startsWith("q="))
    const weight = q === undefined ? 1 : Number(q.slice(2))
    if (name.length > 0) weights.set(name, Number.isFinite(weight) ? weight : 0)
  }
  const weightOf = (encoding: Encoding) => weights.get(encoding) ?? weights.get("*") ?? 0
  if (weightOf("br") > 0 && weightOf("br") >= weightOf("gzip")) return "br"
  return weightOf("gzip") > 0 ? "gzip" : null
}

const compressible =
  /^(application\/(json|javascript|xml|[\w.+-]+\+json)|text\/(?!event-stream)[\w.+-]+|image\/svg\+xml)/i

/** Brotli's quality 4 and gzip's level 6: most of the gain, at a cost fit for answering requests. */
const compress = (encoding: Encoding, body: Uint8Array): Effect.Effect<Buffer, Error> =>
  Effect.async<Buffer, Error>((resume) => {
    const done = (error: Error | null, result: Buffer) => resume(error ? Effect.fail(error) : Effect.succeed(result))
    if (encoding === "br") {
      Zlib.brotliCompress(body, {
        params: {
          [Zlib.constants.BROTLI_PARAM_QUALITY]: 4,
          [Zlib.constants.BROTLI_PARAM_SIZE_HINT]: body.byteLength
        }
      }, done)
    } else {
      Zlib.gzip(body, done)
    }
  })

const varyOnEncoding = (response: HttpServerResponse.HttpServerResponse) => {
  const vary = response.headers["vary"]
  return vary === undefined
    ? HttpServerResponse.setHeader(response, "vary", "accept-encoding")
    : /(^|,)\s*(accept-encoding|\*)\s*(,|$)/i.test(vary)
    ? response
    : HttpServerResponse.setHeader(response, "vary", `${vary}, accept-encoding`)
}

/** The middleware; `minSize` in bytes. */
export const compression = (minSize: number) =>
  HttpMiddleware.make((app) =>
    Effect.gen(function*() {
      const request = yield* HttpServerRequest.HttpServerRequest
      const encoding = request.method === "HEAD" ? null : chooseEncoding(request.headers["accept-encoding"])
      yield* HttpApp.appendPreResponseHandler((_request, response) => {
        const body = response.body
        if (body._tag !== "Uint8Array" || !compressible.test(body.contentType)) return Effect.succeed(response)
        const varied = varyOnEncoding(response)
        if (encoding === null || body.contentLength < minSize || Headers.has(response.headers, "content-encoding")) {
          return Effect.succeed(varied)
        }
        return compress(encoding, body.body).pipe(
          Effect.map((compressed) =>
            HttpServerResponse.setBody(
              HttpServerResponse.setHeader(varied, "content-encoding", encoding),
              HttpBody.uint8Array(compressed, body.contentType)
            )
          ),
          // Never a reason to fail the request: it goes out as it was.
          Effect.orElseSucceed(() => varied)
        )
      })
      return yield* app
    })
  )

/**
 * Files' contents in an S3-compatible object store (`FILES_STORAGE=s3`): AWS S3, MinIO, Cloudflare
 * R2, Garage, Ceph. Objects live under `{S3_PREFIX}{key}`; every request is signed with AWS Signature
 * Version 4 (by `aws4`) and sent by node's HTTP client, bodies streamed both ways.
 *
 * A store that is briefly unwell (a dropped connection, a 5xx, 503 SlowDown) is asked again a few
 * times with a growing wait; past that the operation fails as the local directory's would (a
 * `SystemError`). A store that refuses (AccessDenied, NoSuchBucket, SignatureDoesNotMatch) is
 * misconfigured, not unwell: that is a defect, logged once with the store's error code. Neither the
 * signature nor the secret is ever logged or put in an error.
 */
import { HttpClientRequest, type HttpClientResponse } from "@effect/platform"
import { NodeHttpClient } from "@effect/platform-node"
import { type PlatformError, SystemError, type SystemErrorReason } from "@effect/platform/Error"
import aws4 from "aws4"
import { Chunk, Data, Duration, Effect, Option, Redacted, Schedule, Stream } from "effect"
import type { S3Settings } from "../Config.js"

/** The store refused a request for a reason no retry mends (credentials, bucket, permissions). */
export class ObjectStoreRefused extends Data.TaggedError("ObjectStoreRefused")<{
  readonly message: string
  readonly status: number
  readonly code: string
}> {}

/** Worth asking again: the request did not get through, or the store said it is busy or broken. */
class Transient extends Data.TaggedError("Transient")<{ readonly reason: string }> {}

const attempts = 4
const retrySchedule = Schedule.exponential(Duration.millis(100), 2).pipe(
  Schedule.jittered,
  Schedule.intersect(Schedule.recurs(attempts - 1))
)
/** SHA-256 of no bytes: the payload hash of a GET, HEAD or DELETE. */
const emptyPayloadHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
/**
 * Bounds the wait for the store's answer (its headers). The client sends a PUT's body before that
 * wait ends, so a PUT is given one more second per `uploadBytesPerSecond` of its body (a slow link
 * must not turn every large upload into four failed ones).
 */
const answerTimeout = Duration.seconds(30)
const uploadBytesPerSecond = 256 * 1024
const timeoutFor = (upload: Upload | undefined) =>
  upload === undefined
    ? answerTimeout
    : Duration.sum(answerTimeout, Duration.seconds(Math.ceil(upload.sizeBytes / uploadBytesPerSecond)))

/** RFC 3986 encoding of each path segment, as SigV4's canonical URI for S3 wants it. */
const encodePath = (path: string) =>
  path.split("/").map((segment) =>
    encodeURIComponent(segment).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)
  ).join("/")

/** `<Code>…</Code>` of an S3 XML error body, if there is one. */
export const errorCodeOf = (body: string): string | undefined => /<Code>([^<]{1,100})<\/Code>/.exec(body)?.[1]

const systemError = (reason: SystemErrorReason, method: string, key: string, description: string) =>
  new SystemError({ reason, module: "FileSystem", method, pathOrDescriptor: key, description })

/** Where a request goes and what it is, before signing. */
interface Target {
  readonly method: "GET" | "PUT" | "HEAD" | "DELETE"
  /** `undefined`: the bucket itself. */
  readonly key: string | undefined
}

/** The body of a PUT: a stream of known length and hash. */
interface Upload {
  readonly body: Stream.Stream<Uint8Array, PlatformError>
  readonly sizeBytes: number
  readonly sha256: string
}

export const makeObjectStore = (settings: S3Settings) =>
  Effect.gen(function*() {
    const agent = yield* NodeHttpClient.makeAgent({ keepAlive: true })
    const client = yield* NodeHttpClient.make.pipe(Effect.provideService(NodeHttpClient.HttpAgent, agent))
    const endpoint = new URL(settings.endpoint)
    const basePath = endpoint.pathname.replace(/\/+$/, "")
    const host = settings.forcePathStyle ? endpoint.host : `${settings.bucket}.${endpoint.host}`
    const credentials = {
      accessKeyId: settings.accessKeyId,
      get secretAccessKey() {
        return Redacted.value(settings.secretAccessKey)
      }
    }

    const pathOf = (key: string | undefined) => {
      const object = key === undefined ? "" : `/${encodePath(settings.prefix + key)}`
      return settings.forcePathStyle
        ? `${basePath}/${encodeURIComponent(settings.bucket)}${object}`
        : `${basePath}${object || "/"}`
    }

    /** The request, signed now (a retry signs again: the signature holds for a limited time). */
    const signed = ({ key, method }: Target, upload?: Upload) =>
      Effect.sync(() => {
        const path = pathOf(key)
        const { headers } = aws4.sign({
          host,
          path,
          method,
          service: "s3",
          region: settings.region,
          headers: {
            "X-Amz-Content-Sha256": upload?.sha256 ?? emptyPayloadHash
          }
        }, credentials)
        const request = HttpClientRequest.make(method)(`${endpoint.protocol}//${host}${path}`, {
          headers: headers as Record<string, string>
        })
        return upload === undefined
          ? request
          : HttpClientRequest.bodyStream(request, upload.body, {
            contentType: "application/octet-stream",
            contentLength: upload.sizeBytes
          })
      })

    /** What the store says when it refuses, read from its XML body (a HEAD has none). */
    const refusal = (target: Target, response: HttpClientResponse.HttpClientResponse) =>
      Effect.gen(function*() {
        const body = target.method === "HEAD" ? "" : yield* Effect.orElseSucceed(response.text, () => "")
        const code = errorCodeOf(body) ?? `HTTP ${response.status}`
        return { status: response.status, code }
      })

    const refuse = (target: Target, status: number, code: string) =>
      Effect.zipRight(
        Effect.logError("The object store refused a request; check the S3_* settings").pipe(
          Effect.annotateLogs({ method: target.method, key: target.key ?? "", status, code, bucket: settings.bucket })
        ),
        Effect.die(
          new ObjectStoreRefused({
            message: `The object store refused ${target.method} ${target.key ?? "(bucket)"}: ${status} ${code}`,
            status,
            code
          })
        )
      )

    /**
     * Sends one request (again while the store is unwell) and hands back its 2xx response, or `None`
     * for a missing object; a refusal dies, a store still unwell after the last attempt fails.
     */
    const send = (target: Target, upload?: Upload) => {
      const once = Effect.gen(function*() {
        const request = yield* signed(target, upload)
        const response = yield* client.execute(request).pipe(
          Effect.timeoutFail({
            duration: timeoutFor(upload),
            onTimeout: () => new Transient({ reason: `no answer within ${Duration.format(timeoutFor(upload))}` })
          }),
          // The request (its headers, the signature among them) stays out of the error.
          Effect.catchTag("RequestError", (error) => Effect.fail(new Transient({ reason: `${error.reason} error` }))),
          Effect.catchTag("ResponseError", (error) => Effect.fail(new Transient({ reason: `${error.reason} error` })))
        )
        if (response.status >= 200 && response.status < 300) return Option.some(response)
        const { code, status } = yield* refusal(target, response)
        if (status >= 500) return yield* new Transient({ reason: `${status} ${code}` })
        // A missing object (NoSuchKey), not a missing bucket; a PUT has no object to miss.
        if (status === 404 && code !== "NoSuchBucket" && target.method !== "PUT" && target.key !== undefined) {
          return Option.none<HttpClientResponse.HttpClientResponse>()
        }
        return yield* refuse(target, status, code)
      })
      return once.pipe(
        Effect.tapError((error) =>
          Effect.logWarning("The object store did not answer (asked again unless it was the last attempt)").pipe(
            Effect.annotateLogs({ method: target.method, reason: error.reason })
          )
        ),
        Effect.retry(retrySchedule),
        Effect.catchTag("Transient", (error) =>
          Effect.fail(
            systemError(
              "Unknown",
              target.method,
              target.key ?? "",
              `The object store did not answer ${target.method} after ${attempts} attempts: ${error.reason}`
            )
          )),
        Effect.withSpan("ObjectStore.send", { attributes: { method: target.method } })
      )
    }

    /** Puts a content of known size and hash under `key`. */
    const put = (key: string, upload: Upload): Effect.Effect<void, PlatformError> =>
      Effect.flatMap(send({ method: "PUT", key }, upload), (response) =>
        Option.isSome(response) ? Effect.ignore(response.value.text) : Effect.void)

    /** A stored content as a stream; a missing one fails as a missing file does. */
    const get = (key: string): Stream.Stream<Uint8Array, PlatformError> =>
      Stream.unwrap(Effect.gen(function*() {
        const response = yield* send({ method: "GET", key })
        if (Option.isNone(response)) {
          return yield* Effect.fail(
            systemError("NotFound", "GET", key, `No object ${settings.prefix}${key} in the store`)
          )
        }
        return Stream.mapError(
          response.value.stream,
          () =>
            systemError("UnexpectedEof", "GET", key, "The object store's answer broke off")
        )
      }))

    const getAll = (key: string): Effect.Effect<Uint8Array, PlatformError> =>
      Effect.map(Stream.runCollect(get(key)), (chunks) => Buffer.concat(Chunk.toReadonlyArray(chunks)))

    /**
     * Removes a content; one already gone is not an error. A refusal (logged by `refuse`) fails
     * rather than dies: a removal comes after the row that named the content is gone, and its
     * callers log it and go on.
     */
    const remove = (key: string): Effect.Effect<void, PlatformError> =>
      Effect.flatMap(send({ method: "DELETE", key }), (response) =>
        Option.isSome(response) ? Effect.ignore(response.value.text) : Effect.void).pipe(
          Effect.catchSomeDefect((defect) =>
            defect instanceof ObjectStoreRefused
              ? Option.some(Effect.fail(systemError("PermissionDenied", "DELETE", key, defect.message)))
              : Option.none()
          )
        )

    /** Readiness: one signed HEAD on the bucket, not retried (readiness asks again on its own). */
    const check = Effect.gen(function*() {
      const request = yield* signed({ method: "HEAD", key: undefined })
      const response = yield* client.execute(request).pipe(
        Effect.mapError(() =>
          "object store unreachable"
        )
      )
      if (response.status >= 200 && response.status < 300) return
      yield* Effect.logWarning("The object store's bucket did not answer its readiness check").pipe(
        Effect.annotateLogs({ status: response.status, bucket: settings.bucket })
      )
      return yield* Effect.fail(`object store answered ${response.status}`)
    })

    return { put, get, getAll, remove, check } as const
  })

export type ObjectStore = Effect.Effect.Success<ReturnType<typeof makeObjectStore>>

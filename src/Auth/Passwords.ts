/**
 * Password hashing with scrypt (memory-hard; OWASP: N = 2^17, r = 8, p = 1,
 * i.e. 128 MiB per hash). Hashes run on libuv's thread pool, off the event
 * loop, and at most `PASSWORD_HASH_CONCURRENCY` at once so memory stays
 * bounded under a burst of logins.
 *
 * Stored format: `scrypt$ln=17,r=8,p=1$<salt>$<hash>` (base64), so hashes made
 * under older parameters still verify and are upgraded at the next login.
 */
import { HttpApp, HttpServerResponse } from "@effect/platform"
import { Effect, Redacted } from "effect"
import * as Crypto from "node:crypto"
import { AppConfig } from "../Config.js"
import { ServiceUnavailable } from "../Domain/Errors.js"

const busy = Effect.zipRight(
  HttpApp.appendPreResponseHandler((_request, response) =>
    Effect.succeed(HttpServerResponse.setHeader(response, "retry-after", "5"))
  ),
  Effect.fail(new ServiceUnavailable({ message: "Too many sign-ins at once; try again in a few seconds" }))
)

interface Parameters {
  readonly ln: number
  readonly r: number
  readonly p: number
}

const keyLength = 32
const saltLength = 16

const encode = (params: Parameters, salt: Buffer, hash: Buffer) =>
  `scrypt$ln=${params.ln},r=${params.r},p=${params.p}$${salt.toString("base64")}$${hash.toString("base64")}`

const decode = (stored: string) => {
  const match = /^scrypt\$ln=(\d+),r=(\d+),p=(\d+)\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)$/.exec(stored)
  if (!match) return undefined
  return {
    params: { ln: Number(match[1]), r: Number(match[2]), p: Number(match[3]) },
    salt: Buffer.from(match[4]!, "base64"),
    hash: Buffer.from(match[5]!, "base64")
  }
}

/** Passwords are compared as Unicode NFKC, so the same password typed on another keyboard still matches. */
const normalize = (password: Redacted.Redacted<string>) => Redacted.value(password).normalize("NFKC")

export interface Verification {
  readonly valid: boolean
  /** The stored hash used weaker parameters than the current ones: store a new hash. */
  readonly needsRehash: boolean
}

export class Passwords extends Effect.Service<Passwords>()("Auth/Passwords", {
  effect: Effect.gen(function*() {
    const { auth } = yield* AppConfig
    const current: Parameters = { ln: auth.passwordHashCost, r: 8, p: 1 }
    const permits = yield* Effect.makeSemaphore(auth.passwordHashConcurrency)

    // Uninterruptible once started: the native hash runs to its end whatever happens to the request
    // (a client that hangs up), so its permit must be held until then or the memory bound breaks.
    // Requests waiting for a slot. Past the limit the server is saturated (a burst of sign-ins from
    // many addresses): answering 503 at once beats a queue that only grows.
    let waiting = 0
    const scrypt = (password: string, salt: Buffer, params: Parameters): Effect.Effect<Buffer, ServiceUnavailable> =>
      Effect.suspend(() => {
        if (waiting >= auth.passwordHashQueueLimit) return busy
        waiting++
        let queued = true
        const leaveQueue = Effect.sync(() => {
          if (queued) {
            queued = false
            waiting--
          }
        })
        return permits.withPermits(1)(Effect.zipRight(leaveQueue, run(password, salt, params))).pipe(
          Effect.ensuring(leaveQueue)
        )
      })

    const run = (password: string, salt: Buffer, params: Parameters) =>
      Effect.uninterruptible(Effect.async<Buffer>((resume) => {
        const N = 2 ** params.ln
        Crypto.scrypt(
          password,
          salt,
          keyLength,
          { N, r: params.r, p: params.p, maxmem: 256 * N * params.r },
          (error, key) => resume(error ? Effect.die(error) : Effect.succeed(key))
        )
      }))

    const hash = (password: Redacted.Redacted<string>): Effect.Effect<string, ServiceUnavailable> =>
      Effect.gen(function*() {
        const salt = Crypto.randomBytes(saltLength)
        return encode(current, salt, yield* scrypt(normalize(password), salt, current))
      }).pipe(Effect.withSpan("Passwords.hash"))

    // A fixed hash to verify against when there is no account, so failures take the same time either way.
    const decoy = yield* Effect.cached(hash(Redacted.make(Crypto.randomBytes(16).toString("hex"))).pipe(Effect.orDie))

    const verify = (
      password: Redacted.Redacted<string>,
      stored: string | null
    ): Effect.Effect<Verification, ServiceUnavailable> =>
      Effect.gen(function*() {
        const parsed = (stored === null ? undefined : decode(stored)) ?? decode(yield* decoy)!
        const candidate = yield* scrypt(normalize(password), parsed.salt, parsed.params)
        const valid = stored !== null && candidate.length === parsed.hash.length &&
          Crypto.timingSafeEqual(candidate, parsed.hash)
        return { valid, needsRehash: valid && parsed.params.ln < current.ln }
      }).pipe(Effect.withSpan("Passwords.verify"))

    return { hash, verify } as const
  })
}) {}

/**
 * Access tokens: short-lived JWTs signed with HS256 (the algorithm is pinned
 * on verification, so `alg: none` or a swapped algorithm is refused), with
 * issuer, audience, subject (the user), session family (`sid`) and expiry.
 *
 * Refresh tokens and API keys are opaque random secrets; only their SHA-256
 * is stored (they carry 256 bits of entropy, so a fast hash suffices).
 */
import { Cache, Clock, Data, Duration, Effect, Exit, Option, Redacted } from "effect"
import * as Jose from "jose"
import * as Crypto from "node:crypto"
import { AppConfig } from "../Config.js"
import { SessionFamilyId, UserId } from "../Domain/Ids.js"
import { Secrets } from "../Secrets.js"

export const issuer = "webplus"
export const audience = "webplus-api"
const algorithm = "HS256"

export class InvalidToken extends Data.TaggedError("InvalidToken")<{ readonly reason: string }> {}

export interface AccessClaims {
  readonly userId: UserId
  readonly sessionFamilyId: SessionFamilyId
}

interface VerifiedClaims extends AccessClaims {
  /** Expiry, in epoch milliseconds. */
  readonly expiresAt: number
}

/** How many verified access tokens are remembered, so a client's repeated requests skip the HMAC. */
const verifiedCacheCapacity = 10_000

/** Our tokens are a few hundred characters; anything far longer is not one of them. */
const maxTokenLength = 4_096

/** A random secret with a recognisable prefix: `wpr_…` refresh tokens, `wp_…` API keys. */
export const randomSecret = (prefix: string) => `${prefix}${Crypto.randomBytes(32).toString("base64url")}`

export const hashSecret = (secret: Redacted.Redacted<string>) =>
  Crypto.createHash("sha256").update(Redacted.value(secret)).digest("hex")

export const refreshTokenPrefix = "wpr_"
export const apiKeyPrefix = "wp_"

export class Tokens extends Effect.Service<Tokens>()("Auth/Tokens", {
  effect: Effect.gen(function*() {
    const { auth } = yield* AppConfig
    const { jwtSecret } = yield* Secrets
    const key = new TextEncoder().encode(Redacted.value(jwtSecret))
    const ttlSeconds = Math.max(1, Math.round(Duration.toSeconds(auth.accessTokenTtl)))

    const issueAccessToken = (claims: AccessClaims) =>
      Effect.gen(function*() {
        const now = Math.floor((yield* Clock.currentTimeMillis) / 1000)
        const token = yield* Effect.promise(() =>
          new Jose.SignJWT({ sid: claims.sessionFamilyId })
            .setProtectedHeader({ alg: algorithm, typ: "JWT" })
            .setIssuer(issuer)
            .setAudience(audience)
            .setSubject(claims.userId)
            .setIssuedAt(now)
            .setExpirationTime(now + ttlSeconds)
            .setJti(Crypto.randomUUID())
            .sign(key)
        )
        return { accessToken: Redacted.make(token), expiresIn: ttlSeconds }
      })

    const verify = (token: string): Effect.Effect<VerifiedClaims, InvalidToken> =>
      Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        const { payload } = yield* Effect.tryPromise({
          try: () =>
            Jose.jwtVerify(token, key, {
              algorithms: [algorithm],
              issuer,
              audience,
              requiredClaims: ["sub", "exp", "iat", "sid"],
              currentDate: new Date(now)
            }),
          catch: (error) =>
            new InvalidToken({
              reason: error instanceof Jose.errors.JWTExpired ? "Access token expired" : "Invalid access token"
            })
        })
        const userId = UserId.make(payload.sub!)
        const sessionFamilyId = typeof payload.sid === "string" ? payload.sid : ""
        return { userId, sessionFamilyId: SessionFamilyId.make(sessionFamilyId), expiresAt: payload.exp! * 1000 }
      }).pipe(
        // A structurally valid signature over ids that are not ours is still an invalid token.
        Effect.catchAllDefect(() => Effect.fail(new InvalidToken({ reason: "Invalid access token" })))
      )

    // A token's verification is a pure function of the token and the key; only time changes the
    // answer, so a verified token is remembered until it expires. Only successes are remembered:
    // garbage tokens must not push good ones out.
    const verified = yield* Cache.makeWith({
      capacity: verifiedCacheCapacity,
      lookup: (_token: string) => Effect.dieMessage("verified tokens are only ever set"),
      timeToLive: (exit: Exit.Exit<VerifiedClaims>) =>
        Exit.isSuccess(exit) ? Duration.millis(Math.max(0, exit.value.expiresAt - Date.now())) : Duration.zero
    })

    const verifyAccessToken = (token: Redacted.Redacted<string>): Effect.Effect<AccessClaims, InvalidToken> =>
      Effect.gen(function*() {
        const value = Redacted.value(token)
        if (value.length > maxTokenLength) return yield* new InvalidToken({ reason: "Invalid access token" })
        const claims = yield* verified.getOption(value).pipe(
          Effect.flatMap(Option.match({
            onSome: Effect.succeed,
            onNone: () => Effect.tap(verify(value), (claims) => verified.set(value, claims))
          }))
        )
        // The cache's clock and the request's may differ by a tick: expiry is checked on every use.
        if (claims.expiresAt <= (yield* Clock.currentTimeMillis)) {
          return yield* new InvalidToken({ reason: "Access token expired" })
        }
        return claims
      })

    return { issueAccessToken, verifyAccessToken } as const
  })
}) {}

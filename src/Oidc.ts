/**
 * Single sign-on with an OpenID Connect provider (authorization code flow with PKCE S256).
 *
 * `login` stores the attempt (digest of its `state`, nonce, sealed code verifier, the front-end URL
 * to return to, digest of a binding cookie) and sends the browser to the provider; `callback` takes
 * the attempt once (whichever instance the provider sends the browser back to), checks the browser
 * is the one that started it, redeems the code, finds or links or creates the account, and sends the
 * browser to the front end with a one-time code (never tokens in a URL); `exchange` trades that
 * code for the same tokens a password sign-in gives. Nothing secret travels through the browser
 * but the `state`, the binding cookie and the one-time code, each good once.
 */
import { HttpServerResponse } from "@effect/platform"
import { SqlClient } from "@effect/sql"
import { DateTime, Duration, Effect, Either, Layer, Option, Redacted, Schema } from "effect"
import * as Crypto from "node:crypto"
import { AuditLog } from "./Audit.js"
import { Auth, lockAccountNames } from "./Auth.js"
import { RateLimits } from "./Auth/RateLimits.js"
import { hashSecret, randomSecret } from "./Auth/Tokens.js"
import { AppConfig, type OidcSettings } from "./Config.js"
import { invalid, NotFound, Unauthorized } from "./Domain/Errors.js"
import type { UserId } from "./Domain/Ids.js"
import { BuiltinRoles, Email, User, Username } from "./Domain/User.js"
import { everyHour } from "./Housekeeping.js"
import { CredentialCipher, SealContext } from "./Models/CredentialCipher.js"
import { type OidcFailure, OidcInfo } from "./Oidc/Api.js"
import { OidcRepo } from "./Oidc/OidcRepo.js"
import { OidcProvider, type VerifiedIdentity } from "./Oidc/Provider.js"
import { inTransaction } from "./Sql.js"
import { UsersRepo } from "./Users/UsersRepo.js"

/** How long a sign-in may take at the provider. */
const attemptTtl = Duration.minutes(10)
/** How long the front end has to exchange its one-time code. */
const codeTtl = Duration.seconds(60)

/** The cookie that ties an attempt to the browser that started it (against sign-in cross-site request forgery). */
export const bindingCookie = "webplus_oidc"

export const loginCodePrefix = "wpo_"

const digest = (value: string) => hashSecret(Redacted.make(value))
const random = () => Crypto.randomBytes(32).toString("base64url")

/** A refused sign-in: what the front end is told, and what the audit trail records. */
interface Refusal {
  readonly error: OidcFailure
  readonly description: string
  readonly reason: string
}

const refusal = (error: OidcFailure, description: string, reason: string = error): Refusal => ({
  error,
  description,
  reason
})

const unknownAttempt = new Unauthorized({
  message: "This sign-in attempt is unknown or was already used; start the sign-in again"
})
const invalidCode = new Unauthorized({ message: "Invalid or expired sign-in code" })
const disabled = new NotFound({ message: "Single sign-on is not configured on this server" })

/**
 * The URL as `settings` allow it as a place to return to: equal to an allowed URL that has a path,
 * or on the origin of one that has none.
 */
export const allowedRedirect = (settings: OidcSettings, raw: string): Option.Option<URL> => {
  const url = URL.canParse(raw) ? new URL(raw) : undefined
  if (url === undefined || (url.protocol !== "http:" && url.protocol !== "https:")) return Option.none()
  if (url.username !== "" || url.password !== "") return Option.none()
  const allowed = settings.allowedRedirects.some((entry) =>
    entry.pathname === "/" && entry.search === "" && entry.hash === ""
      ? entry.origin === url.origin
      : entry.href === url.href
  )
  return allowed ? Option.some(url) : Option.none()
}

const withParams = (target: URL, params: Record<string, string>) => {
  const url = new URL(target.href)
  for (const [name, value] of Object.entries(params)) url.searchParams.set(name, value)
  return url.toString()
}

const decodeEmail = Schema.decodeUnknownOption(Email)

/** The longest username (`Username`). */
const usernameMaxLength = 32

/** A username from what the provider calls the person: its allowed characters, 3 to 24 of them. */
const usernameBase = (identity: VerifiedIdentity, email: string | null) => {
  const source = identity.preferredUsername ?? email?.split("@")[0] ?? "user"
  const cleaned = source.normalize("NFKD").replace(/@.*$/, "").replace(/[^A-Za-z0-9_.-]+/g, "_").slice(0, 24)
  return cleaned.length >= 3 ? cleaned : `user_${cleaned}`.slice(0, 24)
}

export class Oidc extends Effect.Service<Oidc>()("Oidc", {
  effect: Effect.gen(function*() {
    const { oidc } = yield* AppConfig
    const sql = yield* SqlClient.SqlClient
    const repo = yield* OidcRepo
    const users = yield* UsersRepo
    const auth = yield* Auth
    const audit = yield* AuditLog
    const rateLimits = yield* RateLimits
    const provider = yield* OidcProvider
    const cipher = yield* CredentialCipher

    const configured = Option.match(oidc, {
      onNone: () => Effect.fail(disabled),
      onSome: Effect.succeed
    })

    const info = Effect.succeed(
      new OidcInfo({
        enabled: Option.isSome(oidc),
        name: Option.match(oidc, { onNone: () => null, onSome: (settings) => settings.providerName })
      })
    )

    /** The binding cookie's attributes: sent back only to the callback, only over HTTPS when the callback is. */
    const cookieOptions = (settings: OidcSettings) => ({
      httpOnly: true,
      secure: settings.redirectUri.startsWith("https:"),
      sameSite: "lax" as const,
      path: new URL(settings.redirectUri).pathname
    })

    const redirectTo = (location: string) =>
      HttpServerResponse.redirect(location, { status: 302, headers: { "cache-control": "no-store" } })

    const login = (query: { readonly redirect?: string | undefined }) =>
      Effect.gen(function*() {
        const settings = yield* configured
        yield* rateLimits.authAttempt("oidc-login", undefined)
        const target = query.redirect === undefined
          ? Option.some(new URL(settings.allowedRedirects[0]!.href))
          : allowedRedirect(settings, query.redirect)
        if (Option.isNone(target)) {
          return yield* invalid(["redirect"], "Not a front-end URL this server may return to (OIDC_ALLOWED_REDIRECTS)")
        }
        const [state, nonce, codeVerifier, binding] = [random(), random(), random(), random()]
        const codeChallenge = Crypto.createHash("sha256").update(codeVerifier).digest("base64url")
        const authorization = yield* Effect.either(
          provider.authorizationUrl(settings, { state, nonce, codeChallenge })
        )
        if (Either.isLeft(authorization)) {
          yield* Effect.logWarning("Single sign-on: the identity provider is unusable").pipe(
            Effect.annotateLogs({ reason: authorization.left.reason })
          )
          return redirectTo(withParams(target.value, {
            error: "server_error",
            error_description: "The identity provider cannot be reached; try again later"
          }))
        }
        const stateHash = digest(state)
        const sealed = cipher.seal(Redacted.make(codeVerifier), SealContext.signInVerifier(stateHash))
        yield* repo.insertAttempt({
          stateHash,
          nonce,
          codeVerifier: sealed.ciphertext,
          codeVerifierKeyId: sealed.keyId,
          redirect: target.value.href,
          bindingHash: digest(binding),
          expiresAt: DateTime.addDuration(yield* DateTime.now, attemptTtl)
        })
        return redirectTo(authorization.right).pipe(
          HttpServerResponse.unsafeSetCookie(bindingCookie, binding, {
            ...cookieOptions(settings),
            maxAge: attemptTtl
          })
        )
      }).pipe(Effect.withSpan("Oidc.login"))

    /**
     * The account `identity` belongs to: found by the identity, linked by verified email (when
     * `OIDC_LINK_BY_EMAIL` allows), or created for a verified email.
     */
    const accountFor = (settings: OidcSettings, identity: VerifiedIdentity) =>
      Effect.gen(function*() {
        const email = Option.getOrNull(decodeEmail(identity.email))
        // Anyone may put any address in their profile at some providers: only a verified one vouches
        // for a domain, an account or a new account (`OIDC_TRUST_EMAIL`: every address the provider gives is).
        const emailVerified = identity.emailVerified || settings.trustEmail
        const domainAllowed = settings.allowedDomains.length === 0 ||
          (email !== null && emailVerified &&
            settings.allowedDomains.includes(email.slice(email.lastIndexOf("@") + 1)))
        const notAllowed = refusal(
          "domain_not_allowed",
          "Your email address's domain may not sign in to this server"
        )
        /** A sign-in of an identity already known: its account, if it may still sign in. */
        const signInKnown = (known: { readonly id: string; readonly userId: UserId }) =>
          Effect.gen(function*() {
            const user = yield* users.findById(known.userId)
            if (Option.isNone(user) || Option.isSome(user.value.deletedAt)) {
              return Either.left(refusal("account_not_found", "Your account no longer exists", "no-account"))
            }
            if (!domainAllowed) return Either.left(notAllowed)
            if (user.value.disabled) {
              return Either.left(refusal("account_disabled", "Your account is disabled", "disabled"))
            }
            yield* repo.touchIdentity(known.id, email)
            return Either.right({ userId: user.value.id })
          })
        const known = yield* repo.findIdentity(identity.issuer, identity.subject)
        if (Option.isSome(known)) return yield* signInKnown(known.value)
        if (!domainAllowed) return Either.left(notAllowed)
        if (email === null) {
          return Either.left(
            refusal("account_not_found", "The identity provider gave no email address for you", "no-email")
          )
        }
        return yield* Effect.gen(function*() {
          // The same lock registrations take: one first account, and no two accounts with one name.
          yield* lockAccountNames(sql)
          // Another callback of the same identity may have created or linked it while this one waited.
          const knownNow = yield* repo.findIdentity(identity.issuer, identity.subject)
          if (Option.isSome(knownNow)) return yield* signInKnown(knownNow.value)
          const holder = yield* users.findByLogin(email)
          if (Option.isSome(holder)) {
            // Nobody may have verified the account's email (local registration does not), so the
            // account may be someone else's: linking is for servers that trust the provider's word.
            if (!settings.linkByEmail) {
              return Either.left(refusal(
                "account_exists",
                "An account with your email address exists; ask an administrator to link it",
                "account-exists"
              ))
            }
            if (!emailVerified) {
              return Either.left(refusal(
                "account_not_found",
                "An account with your email address exists, but the identity provider has not verified the " +
                  "address, so it is not linked",
                "email-not-verified"
              ))
            }
            if (holder.value.disabled) {
              return Either.left(refusal("account_disabled", "Your account is disabled", "disabled"))
            }
            yield* repo.insertIdentity({
              userId: holder.value.id,
              issuer: identity.issuer,
              subject: identity.subject,
              email
            })
            yield* audit.record({
              action: "auth.oidc.linked",
              actor: { type: "user", id: holder.value.id },
              target: { type: "user", id: holder.value.id },
              metadata: { issuer: identity.issuer }
            })
            return Either.right({ userId: holder.value.id })
          }
          if (!settings.autoRegister) {
            return Either.left(refusal(
              "account_not_found",
              "You have no account on this server; ask an administrator for one",
              "no-account"
            ))
          }
          // An unverified address may be someone else's: the account would stay with whoever signed in
          // first, and the address's owner, signing in later, would be linked into it (OIDC_LINK_BY_EMAIL).
          if (!emailVerified) {
            return Either.left(refusal(
              "account_not_found",
              "The identity provider has not verified your email address, so no account is created for you; " +
                "verify it there and sign in again",
              "email-not-verified-new-account"
            ))
          }
          const first = (yield* users.countUsers) === 0
          const role = yield* users.findRoleByName(first ? BuiltinRoles.admin : settings.defaultRole)
          if (Option.isNone(role)) {
            yield* Effect.logWarning("Single sign-on: OIDC_DEFAULT_ROLE names no role").pipe(
              Effect.annotateLogs({ role: settings.defaultRole })
            )
            return Either.left(refusal("server_error", "Accounts cannot be created now", "unknown-role"))
          }
          const username = yield* uniqueUsername(usernameBase(identity, email))
          const now = yield* DateTime.now
          const created = yield* users.insert(User.insert.make({
            email,
            username,
            // No usable password: the account signs in through the provider until an administrator sets one.
            passwordHash: null,
            roleId: role.value.id,
            disabled: false,
            termsAcceptedAt: now,
            marketingConsent: false,
            marketingConsentAt: Option.none(),
            lastLoginAt: Option.none(),
            failedLoginCount: 0,
            deletedAt: Option.none()
          }))
          yield* repo.insertIdentity({ userId: created.id, issuer: identity.issuer, subject: identity.subject, email })
          yield* audit.record({
            action: "user.registered",
            actor: { type: "user", id: created.id },
            target: { type: "user", id: created.id },
            metadata: { method: "oidc", issuer: identity.issuer, role: role.value.name }
          })
          return Either.right({ userId: created.id })
        }).pipe(inTransaction(sql))
      })

    /**
     * `base`, or `base_2`, `base_3`…, or `base_<random>`: the first free one. A suffixed form shortens
     * `base` so that it stays within a username's 32 characters.
     */
    const uniqueUsername = (base: string) =>
      Effect.gen(function*() {
        const suffixed = (suffix: string) => `${base.slice(0, usernameMaxLength - suffix.length - 1)}_${suffix}`
        const candidates = [base, ...[2, 3, 4, 5].map((n) => suffixed(String(n)))]
        for (const candidate of candidates) {
          if (Option.isNone(yield* users.findByLogin(candidate))) return Username.make(candidate)
        }
        return Username.make(suffixed(Crypto.randomBytes(4).toString("hex")))
      })

    const callback = (
      query: {
        readonly code?: string | undefined
        readonly state?: string | undefined
        readonly error?: string | undefined
      },
      cookies: Readonly<Record<string, string>>
    ) =>
      Effect.gen(function*() {
        const settings = yield* configured
        yield* rateLimits.authAttempt("oidc-callback", undefined)
        if (query.state === undefined) return yield* unknownAttempt
        const attempt = yield* repo.takeAttempt(digest(query.state))
        if (Option.isNone(attempt)) return yield* unknownAttempt
        const binding = cookies[bindingCookie]
        if (binding === undefined || digest(binding) !== attempt.value.bindingHash) {
          return yield* new Unauthorized({ message: "This sign-in was started in another browser; start it again" })
        }
        const target = allowedRedirect(settings, attempt.value.redirect)
        if (Option.isNone(target)) return yield* unknownAttempt
        const finish = (params: Record<string, string>) =>
          redirectTo(withParams(target.value, params)).pipe(
            HttpServerResponse.expireCookie(bindingCookie, cookieOptions(settings))
          )
        const refuse = (refused: Refusal, target?: UserId) =>
          Effect.as(
            audit.record({
              action: "auth.login.failed",
              actor: { type: "anonymous", id: null },
              ...(target ? { target: { type: "user", id: target } } : {}),
              metadata: { method: "oidc", reason: refused.reason }
            }),
            finish({ error: refused.error, error_description: refused.description })
          )

        if (DateTime.lessThan(attempt.value.expiresAt, yield* DateTime.now)) {
          return yield* refuse(refusal("login_expired", "The sign-in took too long; start it again"))
        }
        if (query.error !== undefined) {
          return yield* refuse(refusal(
            "access_denied",
            "The identity provider did not sign you in",
            `provider:${query.error.replace(/[^\w.-]/g, "").slice(0, 64)}`
          ))
        }
        if (query.code === undefined) {
          return yield* refuse(refusal("server_error", "The identity provider sent no code", "no-code"))
        }
        const codeVerifier = yield* Effect.either(
          cipher.tryOpen(
            attempt.value.codeVerifier,
            attempt.value.codeVerifierKeyId,
            SealContext.signInVerifier(attempt.value.stateHash)
          )
        )
        if (Either.isLeft(codeVerifier)) {
          // Sealed before a key rotation dropped its key (or damaged, or moved from another row): it cannot be finished.
          yield* Effect.logWarning("Single sign-on: a sign-in attempt's code verifier cannot be opened").pipe(
            Effect.annotateLogs({ keyId: codeVerifier.left.keyId, problem: codeVerifier.left.problem })
          )
          return yield* refuse(refusal(
            "server_error",
            "This sign-in cannot be finished on this server; start it again",
            "attempt-unreadable"
          ))
        }
        const identity = yield* Effect.either(
          provider.redeem(settings, { code: query.code, codeVerifier: codeVerifier.right, nonce: attempt.value.nonce })
        )
        if (Either.isLeft(identity)) {
          yield* Effect.logWarning("Single sign-on: the identity provider's answer was refused").pipe(
            Effect.annotateLogs({ reason: identity.left.reason })
          )
          return yield* refuse(refusal(
            "server_error",
            "The identity provider's answer could not be verified; try again later",
            "provider-answer"
          ))
        }
        const account = yield* accountFor(settings, identity.right)
        if (Either.isLeft(account)) return yield* refuse(account.left)
        const code = Redacted.make(randomSecret(loginCodePrefix))
        yield* repo.insertCode({
          codeHash: hashSecret(code),
          userId: account.right.userId,
          expiresAt: DateTime.addDuration(yield* DateTime.now, codeTtl)
        })
        return finish({ code: Redacted.value(code) })
      }).pipe(Effect.withSpan("Oidc.callback"))

    /** The one-time code of a finished sign-in, for a new session's tokens. */
    const exchange = (code: Redacted.Redacted<string>) =>
      Effect.gen(function*() {
        yield* configured
        const codeHash = hashSecret(code)
        yield* rateLimits.authAttempt("oidc-token", codeHash.slice(0, 16))
        const row = yield* repo.takeCode(codeHash)
        if (Option.isNone(row) || DateTime.lessThan(row.value.expiresAt, yield* DateTime.now)) {
          return yield* invalidCode
        }
        const user = yield* users.findById(row.value.userId)
        if (Option.isNone(user) || user.value.disabled || Option.isSome(user.value.deletedAt)) {
          return yield* invalidCode
        }
        return yield* auth.signInVerified(user.value.id, "oidc")
      }).pipe(Effect.withSpan("Oidc.exchange"))

    return { info, login, callback, exchange } as const
  })
}) {}

/** Removes expired sign-in attempts and codes hourly, on every instance (the delete is idempotent). */
export const OidcCleanupLive = Layer.scopedDiscard(
  Effect.gen(function*() {
    const repo = yield* OidcRepo
    yield* everyHour(repo.deleteExpired, {
      done: "Deleted expired single sign-on attempts",
      failed: "Could not delete expired single sign-on attempts",
      counts: (deleted) => ({ deleted })
    })
  })
)

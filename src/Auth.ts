/**
 * Identity: accounts, sessions (access and refresh tokens), API keys, and the
 * authentication of every protected request.
 */
import type { Headers } from "@effect/platform"
import { SqlClient } from "@effect/sql"
import { DateTime, Effect, FiberRef, Layer, Option, Redacted } from "effect"
import { AuditLog } from "./Audit.js"
import {
  ApiKeyView,
  type ChangePasswordPayload,
  type CreateApiKeyPayload,
  CreatedApiKey,
  type LoginPayload,
  type RegisterPayload,
  TokenPair,
  UserView
} from "./Auth/Api.js"
import { ApiKeysRepo } from "./Auth/ApiKeysRepo.js"
import { Passwords } from "./Auth/Passwords.js"
import { requirePermission, requireSession } from "./Auth/Policy.js"
import { RateLimits } from "./Auth/RateLimits.js"
import { SessionsRepo } from "./Auth/SessionsRepo.js"
import { apiKeyPrefix, hashSecret, randomSecret, refreshTokenPrefix, Tokens } from "./Auth/Tokens.js"
import { AppConfig } from "./Config.js"
import { Actor, CurrentActor, isPermission } from "./Domain/Actor.js"
import { ApiKey, Session } from "./Domain/Credentials.js"
import { Conflict, FieldIssue, Forbidden, orNotFound, Unauthorized, ValidationError } from "./Domain/Errors.js"
import { type ApiKeyId, generateUuid, SessionFamilyId, type UserId } from "./Domain/Ids.js"
import { BuiltinRoles, type Email, type RoleName, User, type Username } from "./Domain/User.js"
import { everyHour } from "./Housekeeping.js"
import { CurrentClient } from "./Http/Middleware.js"
import { allowedModels, checkedModelList } from "./Models/ModelAllowlist.js"
import { ModelsRepo } from "./Models/ModelsRepo.js"
import { inTransaction, transactionLock } from "./Sql.js"
import type { CreateUserPayload } from "./Users/Api.js"
import { UsersRepo, type UserWithRole } from "./Users/UsersRepo.js"

type UserRow = typeof UserWithRole.Type

/** The token of an `Authorization: Bearer …` header. */
export const bearerIn = (authorization: string | undefined): string | undefined =>
  /^Bearer\s+(.+)$/i.exec(authorization ?? "")?.[1]?.trim()

/** The credential of a request's headers: `Authorization: Bearer …` (a token or an API key), else `X-API-Key`. */
export const credentialIn = (headers: Headers.Headers): string | undefined =>
  bearerIn(headers.authorization) ?? headers["x-api-key"]?.trim()

export const toUserView = (user: UserRow) =>
  new UserView({
    id: user.id,
    email: user.email,
    username: user.username,
    role: user.roleName,
    disabled: user.disabled,
    termsAcceptedAt: user.termsAcceptedAt,
    marketingConsent: user.marketingConsent,
    lastLoginAt: Option.getOrNull(user.lastLoginAt),
    createdAt: user.createdAt
  })

export const toApiKeyView = (key: ApiKey) =>
  new ApiKeyView({
    id: key.id,
    name: key.name,
    prefix: key.prefix,
    scopes: key.scopes.filter(isPermission),
    expiresAt: Option.getOrNull(key.expiresAt),
    lastUsedAt: Option.getOrNull(key.lastUsedAt),
    revokedAt: Option.getOrNull(key.revokedAt),
    rateLimitPerMinute: key.rateLimitPerMinute,
    models: key.models,
    tokenBudget: key.tokenBudget,
    createdAt: key.createdAt
  })

const invalidCredentials = new Unauthorized({ message: "Invalid credentials" })

/** NIST 800-63B: length is checked by the schema; here, what the schema cannot know. */
export const checkPasswordPolicy = (password: Redacted.Redacted<string>, identity: ReadonlyArray<string>) => {
  const value = Redacted.value(password).normalize("NFKC").toLowerCase()
  return identity.some((part) => part.toLowerCase() === value)
    ? Effect.fail(
      new ValidationError({
        message: "The password does not meet the password policy",
        issues: [new FieldIssue({ path: ["password"], message: "The password must not be your email or username" })]
      })
    )
    : Effect.void
}

/**
 * Taken by every change that adds or renames an account, in its transaction: exactly one first
 * user becomes admin, and two accounts never end up with the same email address or username.
 */
export const lockAccountNames = (sql: SqlClient.SqlClient) => transactionLock(sql, "register")

const closedRegistration = new Forbidden({
  message: "Registration is closed: an administrator creates accounts on this server"
})

export class Auth extends Effect.Service<Auth>()("Auth", {
  effect: Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const { auth: settings } = yield* AppConfig
    const users = yield* UsersRepo
    const sessions = yield* SessionsRepo
    const apiKeys = yield* ApiKeysRepo
    const models = yield* ModelsRepo
    const passwords = yield* Passwords
    const tokens = yield* Tokens
    const audit = yield* AuditLog
    const rateLimits = yield* RateLimits

    const serialiseRegistrations = lockAccountNames(sql)

    /**
     * Stores a new account, the first one as an admin. `by`: the administrator creating it and the
     * role they give it; `null`: someone registering, which `REGISTRATION=closed` allows only for
     * the first account.
     */
    const createAccount = (
      input: {
        readonly email: Email
        readonly username: Username
        readonly password: Redacted.Redacted<string>
        readonly marketingConsent: boolean
      },
      by: { readonly admin: Actor; readonly role: RoleName } | null
    ) =>
      Effect.gen(function*() {
        const registrationClosed = by === null && settings.registration === "closed"
        // Checked before the (costly) hash too, so a closed server spends nothing on refused requests.
        if (registrationClosed && (yield* users.countUsers) > 0) return yield* closedRegistration
        yield* checkPasswordPolicy(input.password, [input.email, input.username])
        const passwordHash = yield* passwords.hash(input.password)
        const now = yield* DateTime.now
        return yield* Effect.gen(function*() {
          yield* serialiseRegistrations
          const taken = yield* Effect.all([users.findByLogin(input.email), users.findByLogin(input.username)])
          if (taken.some(Option.isSome)) {
            return yield* new Conflict({ message: "That email address or username is already registered" })
          }
          const first = (yield* users.countUsers) === 0
          if (registrationClosed && !first) return yield* closedRegistration
          const role = yield* knownRole(first ? BuiltinRoles.admin : by?.role ?? BuiltinRoles.user)
          const created = yield* users.insert(User.insert.make({
            email: input.email,
            username: input.username,
            passwordHash,
            roleId: role.id,
            disabled: false,
            termsAcceptedAt: now,
            marketingConsent: input.marketingConsent,
            marketingConsentAt: input.marketingConsent ? Option.some(now) : Option.none(),
            lastLoginAt: Option.none(),
            failedLoginCount: 0,
            deletedAt: Option.none()
          }))
          const user = yield* users.get(created.id)
          yield* audit.record({
            action: by === null ? "user.registered" : "user.created",
            actor: by === null ? { type: "user", id: user.id } : by.admin,
            target: { type: "user", id: user.id },
            metadata: { role: user.roleName, marketingConsent: input.marketingConsent }
          })
          return toUserView(user)
        }).pipe(inTransaction(sql))
      })

    /** A role by name, or a 422 naming the field that asked for it. */
    const knownRole = (name: RoleName) =>
      Effect.flatMap(
        users.findRoleByName(name),
        Option.match({
          onNone: () =>
            Effect.fail(
              new ValidationError({
                message: "No such role",
                issues: [new FieldIssue({ path: ["role"], message: `Unknown role "${name}"` })]
              })
            ),
          onSome: Effect.succeed
        })
      )

    const register = (payload: RegisterPayload) =>
      Effect.zipRight(
        rateLimits.authAttempt("register", payload.email),
        createAccount(payload, null)
      ).pipe(Effect.withSpan("Auth.register"))

    /** An account an administrator creates (the way in when `REGISTRATION=closed`). */
    const createUser = (payload: CreateUserPayload) =>
      Effect.gen(function*() {
        const admin = yield* requirePermission("admin:users")
        return yield* createAccount({ ...payload, marketingConsent: false }, { admin, role: payload.role })
      }).pipe(Effect.withSpan("Auth.createUser"))

    /** A new session family for the user, and its first tokens. */
    const startSession = (userId: UserId, familyId: SessionFamilyId) =>
      Effect.gen(function*() {
        const refreshToken = Redacted.make(randomSecret(refreshTokenPrefix))
        const expiresAt = DateTime.addDuration(yield* DateTime.now, settings.refreshTokenTtl)
        const client = yield* FiberRef.get(CurrentClient)
        yield* sessions.insert(Session.insert.make({
          userId,
          familyId,
          tokenHash: hashSecret(refreshToken),
          expiresAt,
          rotatedAt: Option.none(),
          revokedAt: Option.none(),
          revokedReason: Option.none(),
          ipAddress: Option.fromNullable(client.address),
          userAgent: Option.fromNullable(client.userAgent),
          lastUsedAt: Option.none()
        }))
        const access = yield* tokens.issueAccessToken({ userId, sessionFamilyId: familyId })
        return new TokenPair({
          accessToken: access.accessToken,
          refreshToken,
          tokenType: "Bearer",
          expiresIn: access.expiresIn
        })
      })

    const login = (payload: LoginPayload) =>
      Effect.gen(function*() {
        const login = payload.login.trim().toLowerCase()
        const user = Option.getOrNull(yield* users.findByLogin(login))
        // Keyed by the account when it exists, so its email and its username share one budget.
        yield* rateLimits.authAttempt("login", user?.id ?? login)
        const { needsRehash, valid } = yield* passwords.verify(payload.password, user?.passwordHash ?? null)
        if (user === null || !valid || user.disabled) {
          yield* audit.record({
            action: "auth.login.failed",
            actor: { type: "anonymous", id: null },
            ...(user ? { target: { type: "user", id: user.id } } : {}),
            metadata: { reason: user === null ? "unknown-account" : !valid ? "wrong-password" : "disabled" }
          })
          if (user !== null && !valid) yield* users.recordFailedLogin(user.id)
          return yield* invalidCredentials
        }
        const upgradedHash = needsRehash ? yield* passwords.hash(payload.password) : undefined
        const familyId = SessionFamilyId.make(yield* generateUuid)
        return yield* Effect.gen(function*() {
          if (upgradedHash) yield* users.setPasswordHash(user.id, upgradedHash)
          yield* users.recordLogin(user.id)
          const pair = yield* startSession(user.id, familyId)
          yield* audit.record({
            action: "auth.login.succeeded",
            actor: { type: "user", id: user.id },
            target: { type: "session", id: familyId }
          })
          return pair
        }).pipe(inTransaction(sql))
      }).pipe(Effect.withSpan("Auth.login"))

    /**
     * A new session for a user whose identity was established another way (single sign-on:
     * `method`), recorded as their sign-in. The caller has checked that the account is usable.
     */
    const signInVerified = (userId: UserId, method: string) =>
      Effect.gen(function*() {
        const familyId = SessionFamilyId.make(yield* generateUuid)
        return yield* Effect.gen(function*() {
          yield* users.recordLogin(userId)
          const pair = yield* startSession(userId, familyId)
          yield* audit.record({
            action: "auth.login.succeeded",
            actor: { type: "user", id: userId },
            target: { type: "session", id: familyId },
            metadata: { method }
          })
          return pair
        }).pipe(inTransaction(sql))
      }).pipe(Effect.withSpan("Auth.signInVerified"))

    const refresh = (refreshToken: Redacted.Redacted<string>) =>
      Effect.gen(function*() {
        const tokenHash = hashSecret(refreshToken)
        yield* rateLimits.authAttempt("refresh", tokenHash.slice(0, 16))
        const session = yield* sessions.findByTokenHash(tokenHash).pipe(
          Effect.flatMap(Option.match({ onNone: () => Effect.fail(invalidCredentials), onSome: Effect.succeed }))
        )
        if (Option.isSome(session.revokedAt)) return yield* invalidCredentials
        const reuse = Effect.gen(function*() {
          yield* sessions.revokeFamily(session.familyId, "refresh-token-reuse")
          yield* audit.record({
            action: "auth.refresh.reuse-detected",
            actor: { type: "anonymous", id: null },
            target: { type: "user", id: session.userId },
            metadata: { sessionFamilyId: session.familyId }
          })
          return yield* invalidCredentials
        })
        if (Option.isSome(session.rotatedAt)) return yield* reuse
        if (DateTime.lessThan(session.expiresAt, yield* DateTime.now)) return yield* invalidCredentials
        const user = yield* users.findById(session.userId)
        if (Option.isNone(user) || user.value.disabled || Option.isSome(user.value.deletedAt)) {
          return yield* invalidCredentials
        }
        // Exactly one presenter of a token wins the rotation; a concurrent second one is a reuse.
        if (!(yield* sessions.markRotated(session.id))) return yield* reuse
        const pair = yield* startSession(session.userId, session.familyId)
        // A revocation that ran while this rotation did (reuse, logout) may not have seen the new
        // session; the family rule still ends it, and these tokens are not handed out.
        if (yield* sessions.familyRevoked(session.familyId)) return yield* invalidCredentials
        return pair
      }).pipe(Effect.withSpan("Auth.refresh"))

    const logout = Effect.gen(function*() {
      const actor = yield* requireSession
      if (actor.sessionFamilyId) yield* sessions.revokeFamily(actor.sessionFamilyId, "logout")
      yield* audit.record({
        action: "auth.logout",
        actor,
        ...(actor.sessionFamilyId ? { target: { type: "session", id: actor.sessionFamilyId } } : {})
      })
    }).pipe(Effect.withSpan("Auth.logout"))

    const currentUser = Effect.gen(function*() {
      const actor = yield* CurrentActor
      const user = yield* users.get(actor.userId)
      return toUserView(user)
    }).pipe(Effect.withSpan("Auth.currentUser"))

    const changePassword = (payload: ChangePasswordPayload) =>
      Effect.gen(function*() {
        const actor = yield* requireSession
        yield* rateLimits.authAttempt("password", actor.userId)
        const user = yield* users.get(actor.userId)
        const { valid } = yield* passwords.verify(payload.currentPassword, user.passwordHash)
        if (!valid) return yield* new Forbidden({ message: "The current password is incorrect" })
        yield* checkPasswordPolicy(payload.newPassword, [user.email, user.username])
        const passwordHash = yield* passwords.hash(payload.newPassword)
        yield* Effect.gen(function*() {
          yield* users.setPasswordHash(user.id, passwordHash)
          yield* sessions.revokeAllForUser(user.id, "password-changed", actor.sessionFamilyId)
          yield* audit.record({ action: "auth.password.changed", actor, target: { type: "user", id: user.id } })
        }).pipe(inTransaction(sql))
      }).pipe(Effect.withSpan("Auth.changePassword"))

    // --- authentication of protected requests

    const actorForUser = (
      user: UserRow,
      via: { readonly kind: "session"; readonly familyId: SessionFamilyId } | {
        readonly kind: "api_key"
        readonly key: ApiKey
      }
    ) => {
      const rolePermissions = user.rolePermissions.filter(isPermission)
      const models = allowedModels(user.roleModels, via.kind === "api_key" ? via.key.models : null)
      return new Actor({
        userId: user.id,
        role: user.roleName,
        permissions: via.kind === "session"
          ? rolePermissions
          : rolePermissions.filter((permission) => via.key.scopes.includes(permission)),
        via: via.kind,
        ...(via.kind === "session" ? { sessionFamilyId: via.familyId } : {
          apiKeyId: via.key.id,
          ...(via.key.rateLimitPerMinute === null ? {} : { keyRateLimitPerMinute: via.key.rateLimitPerMinute }),
          ...(via.key.tokenBudget === null ? {} : { keyTokenBudget: via.key.tokenBudget })
        }),
        ...(models === undefined ? {} : { models }),
        ...(user.roleTokenBudget === null ? {} : { tokenBudget: user.roleTokenBudget })
      })
    }

    const usable = <U extends UserRow>(user: Option.Option<U>) =>
      Option.filter(user, (found) => !found.disabled && Option.isNone(found.deletedAt))

    const authenticateApiKey = (secret: Redacted.Redacted<string>) =>
      Effect.gen(function*() {
        const key = yield* apiKeys.findByHash(hashSecret(secret)).pipe(Effect.map(Option.getOrNull))
        if (key === null || Option.isSome(key.revokedAt)) {
          return yield* new Unauthorized({ message: "Invalid API key" })
        }
        const now = yield* DateTime.now
        if (Option.isSome(key.expiresAt) && DateTime.lessThanOrEqualTo(key.expiresAt.value, now)) {
          return yield* new Unauthorized({ message: "API key expired" })
        }
        const user = usable(yield* users.findById(key.userId))
        if (Option.isNone(user)) return yield* new Unauthorized({ message: "Invalid API key" })
        yield* apiKeys.touch(key.id)
        return actorForUser(user.value, { kind: "api_key", key })
      })

    const authenticateAccessToken = (token: Redacted.Redacted<string>) =>
      Effect.gen(function*() {
        const claims = yield* tokens.verifyAccessToken(token).pipe(
          Effect.mapError((error) => new Unauthorized({ message: error.reason }))
        )
        const found = usable(yield* users.findForSession(claims.userId, claims.sessionFamilyId))
        if (Option.isNone(found) || !found.value.sessionActive) {
          return yield* new Unauthorized({ message: "Session ended" })
        }
        return actorForUser(found.value, { kind: "session", familyId: claims.sessionFamilyId })
      })

    /** A bearer credential: an API key (`wp_…`) or an access token. */
    const authenticate = (credential: Redacted.Redacted<string>): Effect.Effect<Actor, Unauthorized> => {
      const value = Redacted.value(credential)
      if (value.length === 0) return Effect.fail(new Unauthorized({ message: "Missing credentials" }))
      return (value.startsWith(apiKeyPrefix) ? authenticateApiKey(credential) : authenticateAccessToken(credential))
        .pipe(Effect.withSpan("Auth.authenticate"))
    }

    // --- API keys

    const createApiKey = (payload: CreateApiKeyPayload) =>
      Effect.gen(function*() {
        // Keys are minted by a signed-in person: a key that could mint keys would outlive its own expiry.
        yield* requireSession
        const actor = yield* requirePermission("keys:manage")
        const beyond = payload.scopes.filter((scope) => !actor.can(scope))
        if (beyond.length > 0) {
          return yield* new Forbidden({ message: `A key cannot have scopes you do not hold: ${beyond.join(", ")}` })
        }
        const now = yield* DateTime.now
        if (payload.expiresAt && DateTime.lessThanOrEqualTo(payload.expiresAt, now)) {
          return yield* new ValidationError({
            message: "The expiry must be in the future",
            issues: [new FieldIssue({ path: ["expiresAt"], message: "Must be in the future" })]
          })
        }
        // Models the person may see: any for an administrator of models, else the usable ones; within their role's.
        const keyModels = payload.models === undefined ? null : yield* checkedModelList(models, payload.models, {
          usableOnly: !actor.can("admin:models"),
          allowed: (id) => actor.mayUse(id),
          message: "A key can be limited to models you may use only"
        })
        const secret = Redacted.make(randomSecret(apiKeyPrefix))
        const key = yield* apiKeys.insert(ApiKey.insert.make({
          userId: actor.userId,
          name: payload.name,
          prefix: Redacted.value(secret).slice(0, apiKeyPrefix.length + 8),
          keyHash: hashSecret(secret),
          scopes: Array.from(new Set(payload.scopes)),
          expiresAt: Option.fromNullable(payload.expiresAt),
          lastUsedAt: Option.none(),
          revokedAt: Option.none(),
          rateLimitPerMinute: payload.rateLimitPerMinute ?? null,
          models: keyModels,
          tokenBudget: payload.tokenBudget ?? null
        }))
        yield* audit.record({
          action: "api-key.created",
          actor,
          target: { type: "api_key", id: key.id },
          metadata: {
            name: key.name,
            scopes: [...key.scopes],
            ...(key.models === null ? {} : { models: [...key.models] }),
            ...(key.tokenBudget === null ? {} : { tokenBudget: key.tokenBudget })
          }
        })
        return new CreatedApiKey({ apiKey: toApiKeyView(key), secret })
      }).pipe(Effect.withSpan("Auth.createApiKey"))

    const listApiKeys = Effect.gen(function*() {
      const actor = yield* requirePermission("keys:manage")
      const keys = yield* apiKeys.listForUser(actor.userId)
      return { items: keys.map(toApiKeyView), nextCursor: null }
    }).pipe(Effect.withSpan("Auth.listApiKeys"))

    const revokeApiKey = (id: ApiKeyId) =>
      Effect.gen(function*() {
        const actor = yield* requirePermission("keys:manage")
        const key = yield* apiKeys.findForUser(id, actor.userId).pipe(orNotFound("No such API key"))
        yield* apiKeys.revoke(key.id)
        yield* audit.record({ action: "api-key.revoked", actor, target: { type: "api_key", id: key.id } })
      }).pipe(Effect.withSpan("Auth.revokeApiKey"))

    return {
      register,
      createUser,
      knownRole,
      login,
      signInVerified,
      refresh,
      logout,
      currentUser,
      changePassword,
      authenticate,
      createApiKey,
      listApiKeys,
      revokeApiKey
    } as const
  })
}) {}

/**
 * Deletes expired sessions hourly, on every instance (the delete is idempotent),
 * so the table holds live sessions and what reuse detection still needs.
 */
export const SessionCleanupLive = Layer.scopedDiscard(
  Effect.gen(function*() {
    const sessions = yield* SessionsRepo
    yield* everyHour(sessions.deleteExpired, {
      done: "Deleted expired sessions",
      failed: "Could not delete expired sessions",
      counts: (deleted) => ({ deleted })
    })
  })
)

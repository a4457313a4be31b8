/**
 * Identity and access through the real server: registration, sign-in, access
 * tokens (and forged ones), refresh-token rotation and reuse detection,
 * logout, password changes and API keys, on both dialects.
 *
 * One server per dialect; its first account (the admin) is registered when the
 * server starts, and every test registers its own users with unique names.
 */
import { describe, expect, layer } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import * as Jose from "jose"
import * as Crypto from "node:crypto"
import { call, createKey, type Reply, signIn, signUp, type TestUser } from "./fixtures/Auth.js"
import { dialects } from "./fixtures/Database.js"
import { testServer } from "./fixtures/Server.js"

/** Known to the tests so they can sign tokens of their own. */
const jwtSecret = "test-jwt-secret-0123456789abcdefghijklmn"

/** The server's first account, registered before any test runs. */
class Admin extends Context.Tag("test/Admin")<Admin, TestUser>() {}

const serverWithAdmin = (dialect: (typeof dialects)[number]) =>
  Layer.effect(Admin, signUp()).pipe(
    Layer.provideMerge(testServer({ dialect, env: { JWT_SECRET: jwtSecret } }))
  )

const unique = () => Crypto.randomBytes(5).toString("hex")

const register = (body: Record<string, unknown>) => call("POST", "/api/v1/auth/register", { body })

const login = (login: string, password: string) => call("POST", "/api/v1/auth/login", { body: { login, password } })

const me = (auth: string) => call("GET", "/api/v1/auth/me", { auth })

const refresh = (refreshToken: string) => call("POST", "/api/v1/auth/refresh", { body: { refreshToken } })

/** The status of an error reply, having checked that its body is `{ _tag, message, … }`. */
const expectError = (reply: Reply, status: number, tag: string) => {
  expect({ status: reply.status, _tag: reply.body?._tag }).toEqual({ status, _tag: tag })
  expect(typeof reply.body.message).toBe("string")
}

const issuePaths = (reply: Reply): Array<string> =>
  (reply.body.issues as Array<{ path: Array<string | number> }>).map((issue) => issue.path.join("."))

const expectValidationError = (reply: Reply, path: string) => {
  expectError(reply, 422, "ValidationError")
  expect(issuePaths(reply)).toContain(path)
}

const expectUnauthorized = (reply: Reply) => expectError(reply, 401, "Unauthorized")

const base64url = (value: unknown) => Buffer.from(JSON.stringify(value)).toString("base64url")

const decodePart = (part: string): Record<string, unknown> => JSON.parse(Buffer.from(part, "base64url").toString())

/** Signs an access token ourselves: by default exactly what the server issues. */
const forge = (
  claims: { readonly sub: string; readonly sid: string },
  options: {
    readonly alg?: "HS256" | "HS512"
    readonly issuer?: string
    readonly audience?: string
    readonly expiresInSeconds?: number
  } = {}
) =>
  Effect.promise(() => {
    const now = Math.floor(Date.now() / 1000)
    return new Jose.SignJWT({ sid: claims.sid })
      .setProtectedHeader({ alg: options.alg ?? "HS256", typ: "JWT" })
      .setIssuer(options.issuer ?? "webplus")
      .setAudience(options.audience ?? "webplus-api")
      .setSubject(claims.sub)
      .setIssuedAt(now - 600)
      .setExpirationTime(now + (options.expiresInSeconds ?? 300))
      .setJti(Crypto.randomUUID())
      .sign(new TextEncoder().encode(jwtSecret))
  })

const claimsOf = (user: TestUser) => {
  const payload = Jose.decodeJwt(user.accessToken)
  return { sub: payload.sub as string, sid: payload.sid as string }
}

/** Everything a reply says, for looking for what it must never say. */
const textOf = (reply: Reply) => JSON.stringify(reply.body ?? null)

const expectNoPasswordHash = (reply: Reply) => {
  const text = textOf(reply)
  for (const leak of ["passwordHash", "password_hash", "scrypt$"]) expect(text).not.toContain(leak)
}

for (const dialect of dialects) {
  describe(`auth on ${dialect}`, () => {
    layer(serverWithAdmin(dialect), { excludeTestServices: true })((it) => {
      describe("registration", () => {
        it.effect("the first account ever is an admin, every later one a user", () =>
          Effect.gen(function*() {
            const admin = yield* Admin
            expect(admin.role).toBe("admin")
            expect((yield* me(admin.accessToken)).body.role).toBe("admin")
            const later = yield* signUp()
            expect(later.role).toBe("user")
            expect((yield* me(later.accessToken)).body).toMatchObject({ id: later.id, role: "user", disabled: false })
          }))

        it.effect("emails are normalised, then unique", () =>
          Effect.gen(function*() {
            const id = unique()
            const password = `pass-${id}-phrase`
            const created = yield* register({
              email: ` Alice-${id}@Example.COM `,
              username: `alice_${id}`,
              password,
              acceptTerms: true
            })
            expect(created.status).toBe(201)
            expect(created.body.email).toBe(`alice-${id}@example.com`)
            expect((yield* login(`alice-${id}@example.com`, password)).status).toBe(200)
            const again = yield* register({
              email: `ALICE-${id}@example.com`,
              username: `other_${id}`,
              password,
              acceptTerms: true
            })
            expectError(again, 409, "Conflict")
          }))

        it.effect("usernames are unique regardless of case", () =>
          Effect.gen(function*() {
            const id = unique()
            const first = yield* signUp({ username: `Bob_${id}` })
            const clash = yield* register({
              email: `bob-${id}@example.com`,
              username: `BOB_${id.toUpperCase()}`,
              password: first.password,
              acceptTerms: true
            })
            expectError(clash, 409, "Conflict")
          }))

        it.effect("passwords that break the policy answer 422 on the password field", () =>
          Effect.gen(function*() {
            const id = unique()
            const email = `carol-${id}@example.com`
            const username = `carol_${id}`
            for (
              const password of [
                "short7!",
                "x".repeat(129),
                email,
                email.toUpperCase(),
                username,
                username.toUpperCase()
              ]
            ) {
              const reply = yield* register({ email, username, password, acceptTerms: true })
              expectValidationError(reply, "password")
            }
            // The edges of the length rule are allowed.
            const longest = yield* register({ email, username, password: "y".repeat(128), acceptTerms: true })
            expect(longest.status).toBe(201)
          }))

        it.effect("the terms must be accepted", () =>
          Effect.gen(function*() {
            const id = unique()
            const body = { email: `dan-${id}@example.com`, username: `dan_${id}`, password: `pass-${id}-phrase` }
            expectValidationError(yield* register(body), "acceptTerms")
            expectValidationError(yield* register({ ...body, acceptTerms: false }), "acceptTerms")
          }))

        it.effect("a malformed email answers 422", () =>
          Effect.gen(function*() {
            const id = unique()
            for (const email of ["not-an-email", `eve-${id}@`, `eve ${id}@example.com`, `@example.com`]) {
              const reply = yield* register({
                email,
                username: `eve_${id}`,
                password: `pass-${id}-phrase`,
                acceptTerms: true
              })
              expectValidationError(reply, "email")
            }
          }))

        it.effect("no response ever carries a password hash", () =>
          Effect.gen(function*() {
            const admin = yield* Admin
            const id = unique()
            const password = `pass-${id}-phrase`
            const registered = yield* register({
              email: `frank-${id}@example.com`,
              username: `frank_${id}`,
              password,
              acceptTerms: true
            })
            expect(registered.status).toBe(201)
            const signedIn = yield* login(`frank_${id}`, password)
            expect(signedIn.status).toBe(200)
            const replies = [
              registered,
              signedIn,
              yield* me(signedIn.body.accessToken),
              yield* call("GET", "/api/v1/admin/users?limit=100", { auth: admin.accessToken })
            ]
            for (const reply of replies) {
              expect(reply.status).toBeLessThan(300)
              expectNoPasswordHash(reply)
            }
          }))
      })

      describe("login", () => {
        it.effect("signs in with the email or the username, in any case", () =>
          Effect.gen(function*() {
            const user = yield* signUp({ username: `Grace_${unique()}` })
            for (
              const identifier of [user.email, user.email.toUpperCase(), user.username, user.username.toLowerCase()]
            ) {
              const reply = yield* login(identifier, user.password)
              expect(reply.status).toBe(200)
              expect(reply.body).toEqual({
                accessToken: expect.any(String),
                refreshToken: expect.any(String),
                tokenType: "Bearer",
                expiresIn: expect.any(Number)
              })
              expect(reply.body.expiresIn).toBeGreaterThan(0)
              expect((yield* me(reply.body.accessToken)).body.id).toBe(user.id)
            }
          }))

        it.effect("a wrong password and an unknown account get the same answer", () =>
          Effect.gen(function*() {
            const user = yield* signUp()
            const wrongPassword = yield* login(user.email, `${user.password}-not`)
            const unknownAccount = yield* login(`nobody-${unique()}@example.com`, user.password)
            const invalid = { _tag: "Unauthorized", message: "Invalid credentials" }
            expect(wrongPassword).toMatchObject({ status: 401, body: invalid })
            expect(unknownAccount).toMatchObject({ status: 401, body: invalid })
            expect(wrongPassword.body).toEqual(unknownAccount.body)
          }))

        it.effect("a disabled user cannot sign in", () =>
          Effect.gen(function*() {
            const admin = yield* Admin
            const user = yield* signUp()
            const disabled = yield* call("POST", `/api/v1/admin/users/${user.id}/disable`, { auth: admin.accessToken })
            expect(disabled.status).toBe(200)
            expect(disabled.body.disabled).toBe(true)
            expect((yield* login(user.email, user.password)).body).toEqual({
              _tag: "Unauthorized",
              message: "Invalid credentials"
            })
            expectUnauthorized(yield* me(user.accessToken))
          }))
      })

      describe("access tokens", () => {
        it.effect("a valid access token identifies its user; none at all answers 401", () =>
          Effect.gen(function*() {
            const user = yield* signUp()
            const reply = yield* me(user.accessToken)
            expect(reply.status).toBe(200)
            expect(reply.body).toMatchObject({ id: user.id, email: user.email, username: user.username })
            expectUnauthorized(yield* call("GET", "/api/v1/auth/me"))
            expectUnauthorized(yield* me("not-a-jwt"))
          }))

        it.effect("a tampered signature or payload is refused", () =>
          Effect.gen(function*() {
            const admin = yield* Admin
            const user = yield* signUp()
            const [header, payload, signature] = user.accessToken.split(".") as [string, string, string]
            const flipped = `${signature[0] === "A" ? "B" : "A"}${signature.slice(1)}`
            expectUnauthorized(yield* me(`${header}.${payload}.${flipped}`))
            const asAdmin = base64url({ ...decodePart(payload), sub: admin.id })
            expectUnauthorized(yield* me(`${header}.${asAdmin}.${signature}`))
            // The original is untouched.
            expect((yield* me(user.accessToken)).status).toBe(200)
          }))

        it.effect("an unsigned (alg: none) token is refused", () =>
          Effect.gen(function*() {
            const user = yield* signUp()
            const payload = user.accessToken.split(".")[1]!
            const unsigned = `${base64url({ alg: "none", typ: "JWT" })}.${payload}.`
            expectUnauthorized(yield* me(unsigned))
          }))

        it.effect("a correctly signed token with the wrong issuer, audience or a past expiry is refused", () =>
          Effect.gen(function*() {
            const user = yield* signUp()
            const claims = claimsOf(user)
            // The control: what the server would issue itself is accepted.
            expect((yield* me(yield* forge(claims))).status).toBe(200)
            expectUnauthorized(yield* me(yield* forge(claims, { issuer: "someone-else" })))
            expectUnauthorized(yield* me(yield* forge(claims, { audience: "another-api" })))
            expectUnauthorized(yield* me(yield* forge(claims, { expiresInSeconds: -60 })))
          }))

        it.effect("the algorithm is pinned: HS512 with the same secret is refused", () =>
          Effect.gen(function*() {
            const user = yield* signUp()
            expectUnauthorized(yield* me(yield* forge(claimsOf(user), { alg: "HS512" })))
          }))
      })

      describe("refresh", () => {
        it.effect("a refresh token buys a new pair, whose access token works", () =>
          Effect.gen(function*() {
            const user = yield* signUp()
            const reply = yield* refresh(user.refreshToken)
            expect(reply.status).toBe(200)
            expect(reply.body).toMatchObject({ tokenType: "Bearer" })
            expect(reply.body.refreshToken).not.toBe(user.refreshToken)
            expect(reply.body.accessToken).not.toBe(user.accessToken)
            expect((yield* me(reply.body.accessToken)).body.id).toBe(user.id)
            // And the new refresh token rotates in turn.
            expect((yield* refresh(reply.body.refreshToken)).status).toBe(200)
          }))

        it.effect("a reused refresh token revokes its whole family", () =>
          Effect.gen(function*() {
            const user = yield* signUp()
            const otherSession = yield* signIn(user.email, user.password)
            const rotated = yield* refresh(user.refreshToken)
            expect(rotated.status).toBe(200)
            const newest = yield* refresh(rotated.body.refreshToken)
            expect(newest.status).toBe(200)

            expectUnauthorized(yield* refresh(user.refreshToken))

            expectUnauthorized(yield* refresh(newest.body.refreshToken))
            expectUnauthorized(yield* me(newest.body.accessToken))
            expectUnauthorized(yield* me(user.accessToken))
            // Another session of the same user is another family.
            expect((yield* me(otherSession.accessToken)).status).toBe(200)
            expect((yield* refresh(otherSession.refreshToken)).status).toBe(200)
          }))

        it.effect("an unknown refresh token answers 401, a missing one 422", () =>
          Effect.gen(function*() {
            expectUnauthorized(yield* refresh(`wpr_${Crypto.randomBytes(32).toString("base64url")}`))
            expectUnauthorized(yield* refresh("garbage"))
            expectValidationError(yield* call("POST", "/api/v1/auth/refresh", { body: {} }), "refreshToken")
          }))
      })

      describe("logout", () => {
        it.effect("ends that session's access and refresh tokens, and no other session", () =>
          Effect.gen(function*() {
            const user = yield* signUp()
            const otherSession = yield* signIn(user.email, user.password)
            const reply = yield* call("POST", "/api/v1/auth/logout", { auth: user.accessToken })
            expect(reply.status).toBe(204)
            expectUnauthorized(yield* me(user.accessToken))
            expectUnauthorized(yield* refresh(user.refreshToken))
            expect((yield* me(otherSession.accessToken)).status).toBe(200)
            expect((yield* refresh(otherSession.refreshToken)).status).toBe(200)
          }))
      })

      describe("changing the password", () => {
        it.effect("a wrong current password answers 403, a new one that breaks the policy 422", () =>
          Effect.gen(function*() {
            const user = yield* signUp()
            const wrong = yield* call("POST", "/api/v1/auth/password", {
              auth: user.accessToken,
              body: { currentPassword: `${user.password}-not`, newPassword: `new-${unique()}-phrase` }
            })
            expectError(wrong, 403, "Forbidden")
            const asUsername = yield* call("POST", "/api/v1/auth/password", {
              auth: user.accessToken,
              body: { currentPassword: user.password, newPassword: user.username.toUpperCase() }
            })
            expectValidationError(asUsername, "password")
            // Neither attempt changed anything.
            expect((yield* login(user.email, user.password)).status).toBe(200)
          }))

        it.effect("a new password ends every other session, not the current one", () =>
          Effect.gen(function*() {
            const user = yield* signUp()
            const otherSession = yield* signIn(user.email, user.password)
            const newPassword = `new-${unique()}-phrase`
            const reply = yield* call("POST", "/api/v1/auth/password", {
              auth: user.accessToken,
              body: { currentPassword: user.password, newPassword }
            })
            expect(reply.status).toBe(204)
            expectUnauthorized(yield* login(user.email, user.password))
            expect((yield* login(user.email, newPassword)).status).toBe(200)
            expect((yield* me(user.accessToken)).status).toBe(200)
            expectUnauthorized(yield* me(otherSession.accessToken))
            expectUnauthorized(yield* refresh(otherSession.refreshToken))
            expect((yield* refresh(user.refreshToken)).status).toBe(200)
          }))
      })

      describe("API keys", () => {
        it.effect("a new key shows its secret once; the list never does", () =>
          Effect.gen(function*() {
            const user = yield* signUp()
            const created = yield* call("POST", "/api/v1/auth/api-keys", {
              auth: user.accessToken,
              body: { name: "laptop", scopes: ["models:read", "chat"] }
            })
            expect(created.status).toBe(201)
            const { apiKey, secret } = created.body
            expect(secret).toMatch(/^wp_/)
            expect(apiKey).toMatchObject({
              name: "laptop",
              scopes: ["models:read", "chat"],
              expiresAt: null,
              lastUsedAt: null,
              revokedAt: null
            })
            expect(apiKey.prefix.length).toBeGreaterThan("wp_".length)
            expect(secret.startsWith(apiKey.prefix)).toBe(true)
            expect(secret.length).toBeGreaterThan(apiKey.prefix.length)
            const listed = yield* call("GET", "/api/v1/auth/api-keys", { auth: user.accessToken })
            expect(listed.status).toBe(200)
            expect(listed.body.items).toEqual([expect.objectContaining({ id: apiKey.id, prefix: apiKey.prefix })])
            expect(textOf(listed)).not.toContain(secret)
            expect(textOf(listed)).not.toContain(secret.slice(apiKey.prefix.length))
          }))

        it.effect("a key authenticates as a bearer token and as X-API-Key, and records its use", () =>
          Effect.gen(function*() {
            const user = yield* signUp()
            const key = yield* createKey(user, ["models:read"])
            const asBearer = yield* me(key.secret)
            expect(asBearer.status).toBe(200)
            expect(asBearer.body.id).toBe(user.id)
            const asHeader = yield* call("GET", "/api/v1/auth/me", { headers: { "x-api-key": key.secret } })
            expect(asHeader.status).toBe(200)
            expect(asHeader.body.id).toBe(user.id)
            const listed = yield* call("GET", "/api/v1/auth/api-keys", { auth: user.accessToken })
            const view = listed.body.items.find((item: { id: string }) => item.id === key.id)
            expect(view.lastUsedAt).not.toBeNull()
          }))

        it.effect("a key cannot hold scopes its user lacks", () =>
          Effect.gen(function*() {
            const user = yield* signUp()
            const reply = yield* call("POST", "/api/v1/auth/api-keys", {
              auth: user.accessToken,
              body: { name: "too-much", scopes: ["models:read", "admin:users"] }
            })
            expectError(reply, 403, "Forbidden")
          }))

        it.effect("an expiry in the past answers 422", () =>
          Effect.gen(function*() {
            const user = yield* signUp()
            const reply = yield* call("POST", "/api/v1/auth/api-keys", {
              auth: user.accessToken,
              body: { name: "stale", scopes: ["models:read"], expiresAt: new Date(Date.now() - 60_000).toISOString() }
            })
            expectValidationError(reply, "expiresAt")
          }))

        it.effect("a key works until its expiry, and not after", () =>
          Effect.gen(function*() {
            const user = yield* signUp()
            const expiresAt = new Date(Date.now() + 2_000)
            const key = yield* createKey(user, ["models:read"], { expiresAt: expiresAt.toISOString() })
            expect((yield* me(key.secret)).status).toBe(200)
            yield* Effect.sleep(Math.max(0, expiresAt.getTime() - Date.now()) + 250)
            expectUnauthorized(yield* me(key.secret))
          }))

        it.effect("a revoked key stops working; another user's key cannot be revoked", () =>
          Effect.gen(function*() {
            const owner = yield* signUp()
            const stranger = yield* signUp()
            const key = yield* createKey(owner, ["models:read"])
            const notYours = yield* call("DELETE", `/api/v1/auth/api-keys/${key.id}`, { auth: stranger.accessToken })
            expectError(notYours, 404, "NotFound")
            expect((yield* me(key.secret)).status).toBe(200)
            const revoked = yield* call("DELETE", `/api/v1/auth/api-keys/${key.id}`, { auth: owner.accessToken })
            expect(revoked.status).toBe(204)
            expectUnauthorized(yield* me(key.secret))
            expectUnauthorized(yield* call("GET", "/api/v1/auth/me", { headers: { "x-api-key": key.secret } }))
          }))

        it.effect("a well-formed key that was never issued answers 401", () =>
          Effect.gen(function*() {
            const forged = `wp_${Crypto.randomBytes(32).toString("base64url")}`
            expectUnauthorized(yield* me(forged))
            expectUnauthorized(yield* call("GET", "/api/v1/auth/me", { headers: { "x-api-key": forged } }))
          }))

        it.effect("a key cannot change the password or log out", () =>
          Effect.gen(function*() {
            const user = yield* signUp()
            const key = yield* createKey(user, ["models:read", "keys:manage"])
            const change = yield* call("POST", "/api/v1/auth/password", {
              auth: key.secret,
              body: { currentPassword: user.password, newPassword: `new-${unique()}-phrase` }
            })
            expectError(change, 403, "Forbidden")
            expectError(yield* call("POST", "/api/v1/auth/logout", { auth: key.secret }), 403, "Forbidden")
            // Nothing happened: the password and the session are as they were.
            expect((yield* login(user.email, user.password)).status).toBe(200)
            expect((yield* me(user.accessToken)).status).toBe(200)
          }))
      })
    })
  })
}

/**
 * Single sign-on with OpenID Connect over real HTTP, on both dialects, against a loopback provider
 * (test/fixtures/OidcProvider.ts). Each sign-in is followed by hand: the server's redirect to the
 * provider, the provider's back to the callback, the callback's to the front end with a one-time
 * code, and the code's exchange for tokens. Accounts are created, found again, linked by verified
 * email; refused when disabled, of another domain, unverified or unknown; an unverified email gets
 * no account unless OIDC_TRUST_EMAIL says the provider's word is enough; the userinfo endpoint fills
 * in what the ID token leaves out, about the same subject only; states, codes and attempts are good
 * once and for a while, and an attempt sealed under a key the server no longer has is refused; a
 * front-end URL not allowed is refused; a provider that lies or fails gets nobody in. Off unless
 * configured.
 */
import { SqlClient } from "@effect/sql"
import { describe, expect, it, layer } from "@effect/vitest"
import { Context, Effect, Either, Layer } from "effect"
import * as Crypto from "node:crypto"
import { AppConfig, environment, formatConfigError } from "../src/Config.js"
import { SealContext } from "../src/Models/CredentialCipher.js"
import { call, expectStatus, signUp } from "./fixtures/Auth.js"
import { dialects } from "./fixtures/Database.js"
import { type FakeIdp, fakeOidcProvider, idpSecret, type IdpUser, type IdpUserinfo } from "./fixtures/OidcProvider.js"
import { cipherWith, sealLegacy } from "./fixtures/Sealing.js"
import { inServerDatabase, startTestServer, TestServer, testServer } from "./fixtures/Server.js"

const callbackUri = "http://webplus.test/api/v1/auth/oidc/callback"
const frontEnd = "http://app.test/signed-in"
const otherFrontEnd = "http://other.test"

class Idp extends Context.Tag("test/Oidc/Idp")<Idp, FakeIdp>() {}

const oidcEnv = (idp: FakeIdp, extra: Record<string, string> = {}) => ({
  OIDC_ISSUER: idp.issuer,
  OIDC_CLIENT_ID: idp.clientId,
  OIDC_CLIENT_SECRET: idp.clientSecret,
  OIDC_REDIRECT_URI: callbackUri,
  OIDC_ALLOWED_REDIRECTS: `${frontEnd},${otherFrontEnd}`,
  OIDC_PROVIDER_NAME: "Loopback ID",
  ...extra
})

/** A loopback provider (serving userinfo as `userinfo` says) and a server using it. */
const withIdp = (
  dialect: (typeof dialects)[number],
  extra: Record<string, string> = {},
  userinfo: IdpUserinfo = "none"
) =>
  Layer.unwrapScoped(Effect.gen(function*() {
    const idp = yield* fakeOidcProvider()
    idp.userinfo = userinfo
    return Layer.merge(Layer.succeed(Idp, idp), testServer({ dialect, env: oidcEnv(idp, extra) }))
  }))

/** A browser's request: redirects are not followed, so each `Location` can be checked. */
const browse = (url: string, headers: Record<string, string> = {}) =>
  Effect.promise(() => fetch(url, { redirect: "manual", headers }))

const loginUrl = (redirect?: string) =>
  Effect.map(
    TestServer,
    ({ baseUrl }) =>
      `${baseUrl}/api/v1/auth/oidc/login${redirect === undefined ? "" : `?redirect=${encodeURIComponent(redirect)}`}`
  )

/** The browser's cookie header from a response's `Set-Cookie`s. */
const cookieOf = (response: Response) =>
  response.headers.getSetCookie().map((cookie) => cookie.split(";")[0]!).join("; ")

let subjects = 0
const person = (overrides: Partial<IdpUser> = {}): IdpUser => {
  const n = `${Date.now().toString(36)}${subjects++}`
  return {
    sub: `sub-${n}`,
    email: `sso-${n}@example.com`,
    email_verified: true,
    preferred_username: `sso ${n}`,
    ...overrides
  }
}

/**
 * A whole sign-in as `user` at the provider, by hand: where the browser lands at the end (the front
 * end's URL with `code` or `error`), the callback it went through and the binding cookie.
 */
const signInAs = (user: IdpUser, redirect?: string) =>
  Effect.gen(function*() {
    const idp = yield* Idp
    const { baseUrl } = yield* TestServer
    idp.user = user
    const started = yield* browse(yield* loginUrl(redirect))
    expect(started.status).toBe(302)
    const toIdp = new URL(started.headers.get("location")!)
    expect(`${toIdp.origin}${toIdp.pathname}`).toBe(`${idp.issuer}/authorize`)
    expect(toIdp.searchParams.get("code_challenge_method")).toBe("S256")
    expect(toIdp.searchParams.get("redirect_uri")).toBe(callbackUri)
    // The verifier never travels through the browser; only its challenge does.
    expect(toIdp.searchParams.has("code_verifier")).toBe(false)
    const cookie = cookieOf(started)
    expect(started.headers.getSetCookie()[0]).toMatch(/HttpOnly/i)
    const atIdp = yield* browse(toIdp.toString())
    expect(atIdp.status).toBe(302)
    const back = atIdp.headers.get("location")!
    expect(back.startsWith(`${callbackUri}?`)).toBe(true)
    // The callback URL is the public one registered at the provider; the test server answers it.
    const callback = `${baseUrl}${back.slice("http://webplus.test".length)}`
    const landed = yield* browse(callback, { cookie })
    expect(landed.status, yield* Effect.promise(() => landed.clone().text())).toBe(302)
    const final = new URL(landed.headers.get("location")!)
    return { final, callback, cookie, state: toIdp.searchParams.get("state")! }
  })

/** A sign-in expected to succeed: the one-time code the front end received. */
const codeFor = (user: IdpUser, redirect?: string) =>
  Effect.gen(function*() {
    const { final } = yield* signInAs(user, redirect)
    expect(final.searchParams.get("error"), final.searchParams.get("error_description") ?? "").toBeNull()
    expect(`${final.origin}${final.pathname}`).toBe(redirect ?? frontEnd)
    const code = final.searchParams.get("code")
    expect(code).toMatch(/^wpo_/)
    return code!
  })

/** A sign-in expected to be refused: the `error` the front end received. */
const refusalFor = (user: IdpUser, redirect?: string) =>
  Effect.gen(function*() {
    const { final } = yield* signInAs(user, redirect)
    expect(final.searchParams.has("code")).toBe(false)
    expect(final.searchParams.get("error_description")).not.toContain(idpSecret)
    return final.searchParams.get("error")
  })

const exchange = (code: string) => call("POST", "/api/v1/auth/oidc/token", { body: { code } })

/** A sign-in's tokens. */
const tokensFor = (user: IdpUser) =>
  Effect.flatMap(codeFor(user), (code) => Effect.map(exchange(code), (reply) => expectStatus(reply, 200)))

const me = (accessToken: string) =>
  Effect.map(call("GET", "/api/v1/auth/me", { auth: accessToken }), (r) => expectStatus(r, 200))

const auditActions = (admin: string, action: string) =>
  Effect.map(
    call("GET", `/api/v1/admin/audit-events?action=${encodeURIComponent(action)}&limit=100`, { auth: admin }),
    (reply) => expectStatus(reply, 200).items as Array<any>
  )

const countRows = (table: string) =>
  inServerDatabase(
    Effect.flatMap(SqlClient.SqlClient, (sql) =>
      Effect.map(sql<{ n: number }>`SELECT count(*) AS n FROM ${sql(table)}`, (rows) => Number(rows[0]!.n)))
  )

for (const dialect of dialects) {
  describe(`single sign-on (${dialect})`, () => {
    /** Who the shared server's first sign-in was: its admin. */
    let firstPerson: IdpUser | undefined
    const firstAdmin = Effect.suspend(() =>
      Effect.map(tokensFor(firstPerson!), (tokens) => tokens.accessToken as string)
    )

    // The live clock: expiries are set in the database in real time, and the provider signs with it.
    layer(withIdp(dialect, { OIDC_LINK_BY_EMAIL: "true" }), { timeout: 60_000, excludeTestServices: true })((it) => {
      // Runs first: the server has no account yet.
      it.effect("the first sign-in creates the account, an admin on an empty server; tokens work and refresh", () =>
        Effect.gen(function*() {
          const info = expectStatus(yield* call("GET", "/api/v1/auth/oidc"), 200)
          expect(info).toEqual({ enabled: true, name: "Loopback ID" })
          const first = person({ preferred_username: "Ada Lovelace" })
          firstPerson = first
          const tokens = yield* tokensFor(first)
          expect(tokens.tokenType).toBe("Bearer")
          const account = yield* me(tokens.accessToken)
          expect(account).toMatchObject({ email: first.email, username: "Ada_Lovelace", role: "admin" })
          const refreshed = expectStatus(
            yield* call("POST", "/api/v1/auth/refresh", { body: { refreshToken: tokens.refreshToken } }),
            200
          )
          expect((yield* me(refreshed.accessToken)).id).toBe(account.id)
          // No usable password: neither an empty one nor any other signs in.
          expect((yield* call("POST", "/api/v1/auth/login", { body: { login: first.email, password: "" } })).status)
            .toBe(401)
          expect(
            (yield* call("POST", "/api/v1/auth/login", { body: { login: first.email, password: "anything at all" } }))
              .status
          ).toBe(401)
          const idp = yield* Idp
          expect(idp.tokenRequests.at(-1)).toEqual({ outcome: "ok", basicAuth: true })
          // The next one is a plain user, and takes another name when the one it asks for is taken.
          const second = person({ preferred_username: "Ada Lovelace" })
          const secondAccount = yield* me((yield* tokensFor(second)).accessToken)
          expect(secondAccount).toMatchObject({ role: "user", username: "Ada_Lovelace_2" })
          const registered = yield* auditActions(tokens.accessToken, "user.registered")
          expect(registered.map((event) => event.targetId)).toEqual(
            expect.arrayContaining([account.id, secondAccount.id])
          )
          expect(registered.find((event) => event.targetId === account.id)?.metadata).toMatchObject({
            method: "oidc",
            issuer: idp.issuer,
            role: "admin"
          })
          const logins = yield* auditActions(tokens.accessToken, "auth.login.succeeded")
          expect(logins.some((event) => event.actorId === account.id && event.metadata.method === "oidc")).toBe(true)
        }))

      it.effect("a second sign-in finds the same account, whatever its email became at the provider", () =>
        Effect.gen(function*() {
          const someone = person()
          const before = yield* me((yield* tokensFor(someone)).accessToken)
          const users = yield* countRows("users")
          const again = yield* me((yield* tokensFor({ ...someone, email: `renamed-${someone.email}` })).accessToken)
          expect(again.id).toBe(before.id)
          expect(yield* countRows("users")).toBe(users)
        }))

      it.effect("two first sign-ins of one person at the same moment both succeed, with one account", () =>
        Effect.gen(function*() {
          for (let round = 0; round < 3; round++) {
            const someone = person()
            const users = yield* countRows("users")
            const codes = yield* Effect.all([codeFor(someone), codeFor(someone)], { concurrency: "unbounded" })
            const accounts = yield* Effect.forEach(
              codes,
              (code) => Effect.flatMap(exchange(code), (reply) => me(expectStatus(reply, 200).accessToken))
            )
            expect(accounts[0].id).toBe(accounts[1].id)
            expect(yield* countRows("users")).toBe(users + 1)
          }
        }))

      it.effect("the personal-data export lists the account's identities at providers", () =>
        Effect.gen(function*() {
          const idp = yield* Idp
          const someone = person()
          yield* tokensFor(someone)
          const renamed = { ...someone, email: `renamed-${someone.email}` }
          const tokens = yield* tokensFor(renamed)
          const exported = expectStatus(yield* call("GET", "/api/v1/me/export", { auth: tokens.accessToken }), 200)
          expect(exported.identities).toEqual([{
            issuer: idp.issuer,
            subject: someone.sub,
            email: renamed.email,
            createdAt: expect.any(String),
            lastLoginAt: expect.any(String)
          }])
          const [identity] = exported.identities
          expect(Date.parse(identity.lastLoginAt)).toBeGreaterThanOrEqual(Date.parse(identity.createdAt))
          // Another account's identities are not in it; an account without any has none.
          const local = yield* signUp()
          const own = expectStatus(yield* call("GET", "/api/v1/me/export", { auth: local.accessToken }), 200)
          expect(own.identities).toEqual([])
        }))

      it.effect("a long name whose shorter forms are all taken still gets a username within 32 characters", () =>
        Effect.gen(function*() {
          const base = `Long_name_${Date.now().toString(36)}_padding_padding`.slice(0, 24)
          for (const taken of [base, ...[2, 3, 4, 5].map((n) => `${base}_${n}`)]) {
            yield* signUp({ username: taken })
          }
          const account = yield* me((yield* tokensFor(person({ preferred_username: `${base}_and_more` }))).accessToken)
          expect(account.username).toMatch(new RegExp(`^${base.slice(0, 23)}_[0-9a-f]{8}$`))
          expect(account.username.length).toBe(32)
        }))

      it.effect("links an existing account by an email the provider verified, and only then", () =>
        Effect.gen(function*() {
          const local = yield* signUp()
          const unverified = person({ email: local.email.toUpperCase(), email_verified: false })
          expect(yield* refusalFor(unverified)).toBe("account_not_found")
          expect(yield* refusalFor({ ...unverified, email_verified: undefined as never })).toBe("account_not_found")
          expect(yield* refusalFor({ ...unverified, email_verified: "false" })).toBe("account_not_found")
          const identities = yield* countRows("oidc_identities")
          const verified = { ...unverified, email_verified: true }
          const linked = yield* me((yield* tokensFor(verified)).accessToken)
          expect(linked.id).toBe(local.id)
          expect(yield* countRows("oidc_identities")).toBe(identities + 1)
          // Verified as the string some providers send, "true".
          const other = yield* signUp()
          const asText = person({ email: other.email, email_verified: "true" })
          expect((yield* me((yield* tokensFor(asText)).accessToken)).id).toBe(other.id)
          // The password still works beside it.
          expectStatus(
            yield* call("POST", "/api/v1/auth/login", { body: { login: local.email, password: local.password } }),
            200
          )
          const admin = yield* firstAdmin
          const events = yield* auditActions(admin, "auth.oidc.linked")
          expect(events.some((event) => event.targetId === local.id)).toBe(true)
          const refused = yield* auditActions(admin, "auth.login.failed")
          expect(refused.some((event) => event.metadata.reason === "email-not-verified")).toBe(true)
        }))

      it.effect("refuses a disabled account, and a code it got before being disabled", () =>
        Effect.gen(function*() {
          const someone = person()
          const account = yield* me((yield* tokensFor(someone)).accessToken)
          const code = yield* codeFor(someone)
          const admin = yield* firstAdmin
          expectStatus(yield* call("POST", `/api/v1/admin/users/${account.id}/disable`, { auth: admin }), 200)
          expect(yield* refusalFor(someone)).toBe("account_disabled")
          expect(expectStatus(yield* exchange(code), 401)._tag).toBe("Unauthorized")
          expectStatus(yield* call("POST", `/api/v1/admin/users/${account.id}/enable`, { auth: admin }), 200)
          yield* tokensFor(someone)
        }))

      it.effect("a state is good once, in the browser that started it; a one-time code once, for a minute", () =>
        Effect.gen(function*() {
          const someone = person()
          const { callback, cookie, final } = yield* signInAs(someone)
          const code = final.searchParams.get("code")!
          // The provider's redirect replayed: the attempt is gone.
          const replayed = yield* browse(callback, { cookie })
          expect(replayed.status).toBe(401)
          expect(yield* Effect.promise(() => replayed.json())).toMatchObject({ _tag: "Unauthorized" })
          // Unknown and missing states.
          const { baseUrl } = yield* TestServer
          expect((yield* browse(`${baseUrl}/api/v1/auth/oidc/callback?code=x&state=unknown`, { cookie })).status).toBe(
            401
          )
          expect((yield* browse(`${baseUrl}/api/v1/auth/oidc/callback?code=x`, { cookie })).status).toBe(401)
          // The code: once.
          const tokens = expectStatus(yield* exchange(code), 200)
          expect((yield* me(tokens.accessToken)).email).toBe(someone.email)
          const again = expectStatus(yield* exchange(code), 401)
          expect(again).toMatchObject({ _tag: "Unauthorized", message: expect.any(String) })
          expect(expectStatus(yield* exchange("wpo_unknown"), 401)._tag).toBe("Unauthorized")
          // A code past its minute.
          const late = yield* codeFor(someone)
          yield* inServerDatabase(
            Effect.flatMap(
              SqlClient.SqlClient,
              (sql) => sql`UPDATE oidc_login_codes SET expires_at = ${new Date(Date.now() - 1000).toISOString()}`
            )
          )
          expectStatus(yield* exchange(late), 401)
        }))

      it.effect("a callback from another browser (without the attempt's cookie) is refused", () =>
        Effect.gen(function*() {
          const idp = yield* Idp
          const { baseUrl } = yield* TestServer
          idp.user = person()
          const started = yield* browse(yield* loginUrl())
          const atIdp = yield* browse(started.headers.get("location")!)
          const callback = `${baseUrl}${atIdp.headers.get("location")!.slice("http://webplus.test".length)}`
          const foreign = yield* browse(callback, { cookie: "webplus_oidc=someone-elses" })
          expect(foreign.status).toBe(401)
          const body: any = yield* Effect.promise(() => foreign.json())
          expect(body._tag).toBe("Unauthorized")
          // …and the attempt is used up: the right browser cannot come after it.
          expect((yield* browse(callback, { cookie: cookieOf(started) })).status).toBe(401)
        }))

      it.effect("an attempt older than ten minutes sends the browser back with login_expired", () =>
        Effect.gen(function*() {
          const idp = yield* Idp
          const { baseUrl } = yield* TestServer
          idp.user = person()
          const started = yield* browse(yield* loginUrl())
          const atIdp = yield* browse(started.headers.get("location")!)
          yield* inServerDatabase(
            Effect.flatMap(
              SqlClient.SqlClient,
              (sql) => sql`UPDATE oidc_login_attempts SET expires_at = ${new Date(Date.now() - 1000).toISOString()}`
            )
          )
          const callback = `${baseUrl}${atIdp.headers.get("location")!.slice("http://webplus.test".length)}`
          const landed = yield* browse(callback, { cookie: cookieOf(started) })
          expect(landed.status).toBe(302)
          const final = new URL(landed.headers.get("location")!)
          expect(final.searchParams.get("error")).toBe("login_expired")
          expect(final.searchParams.has("code")).toBe(false)
        }))

      it.effect("returns only to the front-end URLs allowed: exactly, or by origin; never elsewhere", () =>
        Effect.gen(function*() {
          const refusedUrls = [
            "https://evil.test/",
            "http://app.test/elsewhere",
            "http://app.test/signed-in/../elsewhere?x",
            "http://app.test.evil.test/signed-in",
            "http://user@app.test/signed-in",
            "//evil.test",
            "javascript:alert(1)",
            "http://other.test.evil.test/"
          ]
          const attempts = yield* countRows("oidc_login_attempts")
          for (const url of refusedUrls) {
            const response = yield* browse(yield* loginUrl(url))
            expect(response.status, url).toBe(422)
            expect(response.headers.get("location")).toBeNull()
            const body = yield* Effect.promise(() => response.json())
            expect(body).toMatchObject({ _tag: "ValidationError", issues: [{ path: ["redirect"] }] })
          }
          expect(yield* countRows("oidc_login_attempts")).toBe(attempts)
          // An origin allows any URL on it; the query the front end put there comes back with the code.
          const code = yield* codeFor(person(), "http://other.test/any/page")
          expect(code).toMatch(/^wpo_/)
          const { final } = yield* signInAs(person(), "http://other.test/back?tab=2")
          expect(final.searchParams.get("tab")).toBe("2")
          expect(final.searchParams.get("code")).toMatch(/^wpo_/)
        }))

      it.effect("a provider that lies or fails signs nobody in, and nothing of its answer reaches the client", () =>
        Effect.gen(function*() {
          const idp = yield* Idp
          const users = yield* countRows("users")
          const cases = [
            ["bad-signature", "server_error"],
            ["wrong-audience", "server_error"],
            ["wrong-issuer", "server_error"],
            ["wrong-nonce", "server_error"],
            ["expired", "server_error"],
            ["token-500", "server_error"],
            ["error", "access_denied"]
          ] as const
          for (const [fault, error] of cases) {
            idp.fault = fault
            const { final } = yield* signInAs(person())
            expect(final.searchParams.get("error"), fault).toBe(error)
            expect(final.searchParams.has("code"), fault).toBe(false)
            expect(final.toString(), fault).not.toContain(idpSecret)
          }
          idp.fault = "none"
          expect(yield* countRows("users")).toBe(users)
          yield* tokensFor(person())
        }))

      it.effect("an email the provider has not verified gets no account, nor its owner's later", () =>
        Effect.gen(function*() {
          const users = yield* countRows("users")
          const identities = yield* countRows("oidc_identities")
          const address = `taken-${Date.now().toString(36)}@example.com`
          const pretender = person({ email: address, email_verified: false })
          for (const email_verified of [false, "false", undefined] as const) {
            const { final } = yield* signInAs({ ...pretender, email_verified: email_verified as never })
            expect(final.searchParams.get("error"), String(email_verified)).toBe("account_not_found")
            expect(final.searchParams.get("error_description")).toContain("not verified your email address")
            expect(final.searchParams.has("code")).toBe(false)
          }
          expect(yield* countRows("users")).toBe(users)
          expect(yield* countRows("oidc_identities")).toBe(identities)
          // The address's owner, verified, gets an account of their own: nobody else holds it.
          const owner = person({ email: address.toUpperCase() })
          const account = yield* me((yield* tokensFor(owner)).accessToken)
          expect(account.email).toBe(address)
          expect(yield* countRows("users")).toBe(users + 1)
          const admin = yield* firstAdmin
          expect(yield* auditActions(admin, "auth.oidc.linked")).not.toContainEqual(
            expect.objectContaining({ targetId: account.id })
          )
          const refused = yield* auditActions(admin, "auth.login.failed")
          expect(refused.filter((event) => event.metadata.reason === "email-not-verified-new-account"))
            .toHaveLength(3)
        }))
    })

    // The provider's discovery document names a userinfo endpoint from the start: the server keeps it an hour.
    let userinfoAdmin: IdpUser | undefined
    layer(withIdp(dialect, {}, "claims"), { timeout: 60_000, excludeTestServices: true })((it) => {
      // Runs first: its sign-in is the server's admin.
      it.effect("userinfo fills in the email an ID token leaves out, asked with the access token", () =>
        Effect.gen(function*() {
          const idp = yield* Idp
          idp.fault = "id-token-sub-only"
          const someone = person({ preferred_username: "Grace Hopper", email_verified: "true" })
          userinfoAdmin = someone
          const account = yield* me((yield* tokensFor(someone)).accessToken)
          expect(account).toMatchObject({ email: someone.email, username: "Grace_Hopper" })
          // The fixture answers only an access token it issued.
          expect(idp.userinfoRequests).toEqual(["ok"])
          // Found again by its identity the next time, with the email still from userinfo.
          expect((yield* me((yield* tokensFor(someone)).accessToken)).id).toBe(account.id)
          // Unverified there too: no account.
          expect(yield* refusalFor(person({ email_verified: false }))).toBe("account_not_found")
          // An ID token with an email but no email_verified is completed the same way.
          idp.fault = "none"
          const asked = idp.userinfoRequests.length
          const noClaim = person({ email_verified: undefined as never })
          expect(yield* refusalFor(noClaim)).toBe("account_not_found")
          expect(idp.userinfoRequests.length).toBe(asked + 1)
          // An ID token that says it all: userinfo is not asked.
          yield* tokensFor(person())
          expect(idp.userinfoRequests.length).toBe(asked + 1)
        }))

      it.effect("userinfo about another subject refuses; failing, the ID token's claims as they are, and nothing shown", () =>
        Effect.gen(function*() {
          const idp = yield* Idp
          const admin = (yield* tokensFor(userinfoAdmin!)).accessToken as string
          const users = yield* countRows("users")
          idp.fault = "id-token-sub-only"
          for (const answer of ["other-sub", "http-500", "not-json"] as const) {
            idp.userinfo = answer
            const asked = idp.userinfoRequests.length
            const { final } = yield* signInAs(person())
            expect(idp.userinfoRequests.length, answer).toBe(asked + 1)
            // Another subject's claims refuse the sign-in; an endpoint that does not answer leaves the ID
            // token's claims, here without an address: no account for a stranger.
            expect(final.searchParams.get("error"), answer).toBe(
              answer === "other-sub" ? "server_error" : "account_not_found"
            )
            expect(final.searchParams.has("code"), answer).toBe(false)
            expect(final.toString(), answer).not.toContain(idpSecret)
          }
          expect(yield* countRows("users")).toBe(users)
          const refused = yield* auditActions(admin, "auth.login.failed")
          expect(refused.filter((event) => event.metadata.reason === "provider-answer")).toHaveLength(1)
          expect(refused.filter((event) => event.metadata.reason === "no-email")).toHaveLength(2)
          // A known identity still signs in while the endpoint fails.
          idp.userinfo = "http-500"
          const asked = idp.userinfoRequests.length
          expect((yield* me((yield* tokensFor(userinfoAdmin!)).accessToken)).email).toBe(userinfoAdmin!.email)
          expect(idp.userinfoRequests.length).toBe(asked + 1)
          idp.userinfo = "claims"
          idp.fault = "none"
        }))
    })

    it.scopedLive(
      "auto-registration off and allowed domains: unknown people and other domains are refused",
      () =>
        Effect.gen(function*() {
          const local = yield* signUp({ email: `local-${Date.now()}@allowed.test` })
          expect(yield* refusalFor(person({ email: `new-${Date.now()}@allowed.test` }))).toBe("account_not_found")
          expect(yield* refusalFor(person({ email: local.email.replace("allowed.test", "elsewhere.test") })))
            .toBe("domain_not_allowed")
          expect(yield* refusalFor(person({ email: undefined as never }))).toBe("domain_not_allowed")
          // An address of an allowed domain that the provider has not verified vouches for nothing.
          expect(yield* refusalFor(person({ email: `new-${Date.now()}@allowed.test`, email_verified: false })))
            .toBe("domain_not_allowed")
          expect(yield* refusalFor(person({ email: local.email, email_verified: false }))).toBe("domain_not_allowed")
          expect(yield* refusalFor(person({ email: local.email, email_verified: undefined as never })))
            .toBe("domain_not_allowed")
          expect(yield* countRows("users")).toBe(1)
          // An existing account of an allowed domain still links and signs in.
          const linked = yield* me((yield* tokensFor(person({ email: local.email }))).accessToken)
          expect(linked.id).toBe(local.id)
          const partner = yield* signUp({ email: `someone-${Date.now()}@partner.test` })
          expect((yield* me((yield* tokensFor(person({ email: partner.email }))).accessToken)).id).toBe(partner.id)
        }).pipe(Effect.provide(withIdp(dialect, {
          OIDC_AUTO_REGISTER: "false",
          OIDC_ALLOWED_DOMAINS: "allowed.test, @Partner.test",
          OIDC_LINK_BY_EMAIL: "true"
        }))),
      { timeout: 60_000 }
    )

    it.scopedLive(
      "by default, a sign-in with the email of an existing account is refused, and nothing is created",
      () =>
        Effect.gen(function*() {
          const admin = yield* signUp()
          const local = yield* signUp()
          const users = yield* countRows("users")
          const identities = yield* countRows("oidc_identities")
          for (const email_verified of [true, false] as const) {
            const { final } = yield* signInAs(person({ email: local.email.toUpperCase(), email_verified }))
            expect(final.searchParams.get("error")).toBe("account_exists")
            expect(final.searchParams.get("error_description")).toBe(
              "An account with your email address exists; ask an administrator to link it"
            )
            expect(final.searchParams.has("code")).toBe(false)
          }
          expect(yield* countRows("users")).toBe(users)
          expect(yield* countRows("oidc_identities")).toBe(identities)
          const refused = yield* auditActions(admin.accessToken, "auth.login.failed")
          expect(refused.filter((event) => event.metadata.reason === "account-exists")).toHaveLength(2)
          expect(yield* auditActions(admin.accessToken, "auth.oidc.linked")).toEqual([])
          // Someone new still gets an account.
          yield* tokensFor(person())
        }).pipe(Effect.provide(withIdp(dialect))),
      { timeout: 60_000 }
    )

    it.scopedLive(
      "OIDC_TRUST_EMAIL: an address the provider does not say it verified creates, links and passes the domains",
      () =>
        Effect.gen(function*() {
          const n = Date.now().toString(36)
          const created = person({ email: `new-${n}@trusted.test`, email_verified: undefined as never })
          const account = yield* me((yield* tokensFor(created)).accessToken)
          expect(account).toMatchObject({ email: created.email, role: "admin" })
          const local = yield* signUp({ email: `local-${n}@trusted.test` })
          const linked = yield* me(
            (yield* tokensFor(person({ email: local.email, email_verified: false }))).accessToken
          )
          expect(linked.id).toBe(local.id)
          // Trusted is not allowed: another domain stays out.
          expect(yield* refusalFor(person({ email: `x-${n}@elsewhere.test`, email_verified: false })))
            .toBe("domain_not_allowed")
          expect(yield* countRows("users")).toBe(2)
        }).pipe(Effect.provide(withIdp(dialect, {
          OIDC_TRUST_EMAIL: "true",
          OIDC_LINK_BY_EMAIL: "true",
          OIDC_ALLOWED_DOMAINS: "trusted.test"
        }))),
      { timeout: 60_000 }
    )

    it.scopedLive(
      "a sign-in started under a key the server no longer has, or whose verifier was damaged, is refused",
      () =>
        Effect.gen(function*() {
          const idp = yield* fakeOidcProvider()
          const key = () => Crypto.randomBytes(32).toString("base64")
          const secrets = { JWT_SECRET: Crypto.randomBytes(32).toString("hex") }
          const before = yield* startTestServer(testServer({
            dialect,
            env: { ...oidcEnv(idp), ...secrets, ENCRYPTION_KEYS: `old:${key()}` }
          }))
          // The same database after a rotation that dropped the old key.
          const after = yield* startTestServer(testServer({
            env: {
              ...oidcEnv(idp),
              ...secrets,
              ENCRYPTION_KEYS: `new:${key()}`,
              ...(before.databaseUrl === undefined
                ? { DATA_DIR: before.dataDir }
                : { DATABASE_URL: before.databaseUrl })
            }
          }))
          /** A sign-in started on `from`, up to the provider's redirect to the callback. */
          const startOn = (from: typeof before) =>
            Effect.gen(function*() {
              idp.user = person()
              const started = yield* browse(`${from.baseUrl}/api/v1/auth/oidc/login`)
              const atIdp = yield* browse(started.headers.get("location")!)
              const path = atIdp.headers.get("location")!.slice("http://webplus.test".length)
              return { path, cookie: cookieOf(started) }
            })
          const land = (server: typeof before, attempt: { path: string; cookie: string }) =>
            browse(`${server.baseUrl}${attempt.path}`, { cookie: attempt.cookie })
          const admin = yield* signUp().pipe(Effect.provideService(TestServer, after))
          // The database through `before`, whose TestServer knows where it is.
          const inDatabase = Effect.provideService(TestServer, before)
          const users = yield* countRows("users").pipe(inDatabase)

          const rotated = yield* startOn(before)
          const landed = yield* land(after, rotated)
          expect(landed.status).toBe(302)
          const final = new URL(landed.headers.get("location")!)
          expect(`${final.origin}${final.pathname}`).toBe(frontEnd)
          expect(final.searchParams.get("error")).toBe("server_error")
          expect(final.searchParams.get("error_description")).toBe(
            "This sign-in cannot be finished on this server; start it again"
          )
          expect(final.searchParams.has("code")).toBe(false)
          // Used up all the same: not even the server with the key may finish it now.
          expect((yield* land(before, rotated)).status).toBe(401)
          // The token endpoint was never asked.
          expect(idp.tokenRequests).toEqual([])

          // A verifier that does not open under a key the server has.
          const damaged = yield* startOn(after)
          yield* inServerDatabase(
            Effect.flatMap(
              SqlClient.SqlClient,
              (sql) => sql`UPDATE oidc_login_attempts SET code_verifier = ${Crypto.randomBytes(60).toString("base64")}`
            )
          ).pipe(inDatabase)
          const refused = new URL((yield* land(after, damaged)).headers.get("location")!)
          expect(refused.searchParams.get("error")).toBe("server_error")

          expect(yield* countRows("users").pipe(inDatabase)).toBe(users)
          yield* Effect.gen(function*() {
            const events = yield* auditActions(admin.accessToken, "auth.login.failed")
            expect(events.filter((event) => event.metadata.reason === "attempt-unreadable")).toHaveLength(2)
            // A new sign-in on the rotated server works.
            yield* tokensFor(person())
          }).pipe(Effect.provideService(TestServer, after), Effect.provideService(Idp, idp))
        }),
      { timeout: 60_000 }
    )

    it.scopedLive(
      "a code verifier moved onto another sign-in is refused; one sealed before verifiers were bound still works",
      () =>
        Effect.gen(function*() {
          const idp = yield* fakeOidcProvider()
          const key = Crypto.randomBytes(32)
          const keys = `k:${key.toString("base64")}`
          const server = yield* startTestServer(testServer({
            dialect,
            env: { ...oidcEnv(idp), JWT_SECRET: Crypto.randomBytes(32).toString("hex"), ENCRYPTION_KEYS: keys }
          }))
          yield* Effect.gen(function*() {
            const attempts = inServerDatabase(
              Effect.flatMap(SqlClient.SqlClient, (sql) =>
                sql<{ readonly stateHash: string; readonly codeVerifier: string }>`
                  SELECT state_hash, code_verifier FROM oidc_login_attempts`)
            )
            const setVerifier = (stateHash: string, codeVerifier: string) =>
              inServerDatabase(
                Effect.flatMap(SqlClient.SqlClient, (sql) =>
                  sql`UPDATE oidc_login_attempts SET code_verifier = ${codeVerifier} WHERE state_hash = ${stateHash}`)
              )
            /** A sign-in started, up to the provider's redirect to the callback; its attempt's row. */
            const start = Effect.gen(function*() {
              const before = new Set((yield* attempts).map((row) =>
                row.stateHash
              ))
              idp.user = person()
              const started = yield* browse(yield* loginUrl())
              const atIdp = yield* browse(started.headers.get("location")!)
              const path = atIdp.headers.get("location")!.slice("http://webplus.test".length)
              const row = (yield* attempts).find((attempt) => !before.has(attempt.stateHash))!
              return { path, cookie: cookieOf(started), row }
            })
            const land = (attempt: { path: string; cookie: string }) =>
              Effect.flatMap(TestServer, ({ baseUrl }) =>
                Effect.map(
                  browse(`${baseUrl}${attempt.path}`, { cookie: attempt.cookie }),
                  (landed) => new URL(landed.headers.get("location")!)
                ))
            const first = yield* start
            const second = yield* start

            // The first's verifier, under the same key, in the second's row: not opened, the provider not asked.
            yield* setVerifier(second.row.stateHash, first.row.codeVerifier)
            const refused = yield* land(second)
            expect(refused.searchParams.get("error")).toBe("server_error")
            expect(refused.searchParams.get("error_description")).toBe(
              "This sign-in cannot be finished on this server; start it again"
            )
            expect(idp.tokenRequests).toEqual([])

            // The first's verifier as an earlier version sealed it (the key id alone bound): it opens.
            const verifier = Either.getOrThrow(
              cipherWith(keys).openBytes(first.row.codeVerifier, "k", SealContext.signInVerifier(first.row.stateHash))
            )
            yield* setVerifier(first.row.stateHash, sealLegacy(verifier, "k", key))
            const landed = yield* land(first)
            expect(landed.searchParams.get("error"), landed.searchParams.get("error_description") ?? "").toBeNull()
            expect(landed.searchParams.get("code")).toMatch(/^wpo_/)
            expect(idp.tokenRequests).toEqual([{ outcome: "ok", basicAuth: true }])
          }).pipe(Effect.provideService(TestServer, server))
        }),
      { timeout: 60_000 }
    )

    it.scopedLive(
      "a provider down at the start sends the browser back with server_error; once up, it works",
      () =>
        Effect.gen(function*() {
          const idp = yield* fakeOidcProvider()
          idp.fault = "discovery-500"
          const server = yield* startTestServer(testServer({ dialect, env: oidcEnv(idp) }))
          yield* Effect.gen(function*() {
            const started = yield* browse(yield* loginUrl())
            expect(started.status).toBe(302)
            const final = new URL(started.headers.get("location")!)
            expect(`${final.origin}${final.pathname}`).toBe(frontEnd)
            expect(final.searchParams.get("error")).toBe("server_error")
            idp.fault = "none"
            yield* tokensFor(person())
          }).pipe(Effect.provideService(TestServer, server), Effect.provideService(Idp, idp))
        }),
      { timeout: 60_000 }
    )

    it.scopedLive(
      "without configuration: info says disabled, the other routes answer 404",
      () =>
        Effect.gen(function*() {
          const server = yield* startTestServer(testServer({ dialect }))
          yield* Effect.gen(function*() {
            expect(expectStatus(yield* call("GET", "/api/v1/auth/oidc"), 200)).toEqual({ enabled: false, name: null })
            const login = yield* browse(yield* loginUrl(frontEnd))
            expect(login.status).toBe(404)
            expect(yield* Effect.promise(() => login.json())).toMatchObject({
              _tag: "NotFound",
              message: expect.any(String)
            })
            expect(expectStatus(yield* call("GET", "/api/v1/auth/oidc/callback?code=x&state=y"), 404)._tag).toBe(
              "NotFound"
            )
            expect(expectStatus(yield* exchange("wpo_x"), 404)._tag).toBe("NotFound")
          }).pipe(Effect.provideService(TestServer, server))
        }),
      { timeout: 60_000 }
    )

    it.scopedLive("the login, callback and token routes are rate limited per address", () =>
      Effect.gen(function*() {
        const idp = yield* fakeOidcProvider()
        const server = yield* startTestServer(testServer({
          dialect,
          env: { ...oidcEnv(idp), AUTH_RATE_LIMIT_PER_ADDRESS: "2" }
        }))
        yield* Effect.gen(function*() {
          for (const path of ["/api/v1/auth/oidc/login", "/api/v1/auth/oidc/callback?state=x"]) {
            const statuses: Array<number> = []
            for (let i = 0; i < 3; i++) statuses.push((yield* browse(`${server.baseUrl}${path}`)).status)
            expect(statuses[2], path).toBe(429)
          }
          const statuses: Array<number> = []
          for (let i = 0; i < 3; i++) statuses.push((yield* exchange(`wpo_${i}`)).status)
          expect(statuses).toEqual([401, 401, 429])
        }).pipe(Effect.provideService(TestServer, server))
      }), { timeout: 60_000 })
  })
}

describe("single sign-on configuration", () => {
  const load = (env: Record<string, string>) =>
    AppConfig.pipe(Effect.provide(AppConfig.Default), Effect.withConfigProvider(environment(env)))
  const complete = {
    OIDC_ISSUER: "https://id.example.com/realms/team",
    OIDC_CLIENT_ID: "webplus",
    OIDC_REDIRECT_URI: "https://chat.example.com/api/v1/auth/oidc/callback",
    OIDC_ALLOWED_REDIRECTS: "https://chat.example.com"
  }

  it.effect("is off without OIDC_ISSUER, with defaults when on", () =>
    Effect.gen(function*() {
      expect((yield* load({})).oidc._tag).toBe("None")
      const config = yield* load(complete)
      expect(config.oidc._tag).toBe("Some")
      if (config.oidc._tag !== "Some") return
      expect(config.oidc.value).toMatchObject({
        scopes: "openid email profile",
        providerName: "Single sign-on",
        autoRegister: true,
        allowedDomains: [],
        linkByEmail: false,
        defaultRole: "user"
      })
      expect(config.oidc.value.clientSecret._tag).toBe("None")
    }))

  it.effect("OIDC_TRUST_EMAIL is off unless set to true", () =>
    Effect.gen(function*() {
      const trust = (env: Record<string, string>) =>
        Effect.map(load(env), (config) => config.oidc._tag === "Some" && config.oidc.value.trustEmail)
      expect(yield* trust(complete)).toBe(false)
      expect(yield* trust({ ...complete, OIDC_TRUST_EMAIL: "true" })).toBe(true)
      expect(yield* trust({ ...complete, OIDC_TRUST_EMAIL: "false" })).toBe(false)
      expect(formatConfigError(yield* Effect.flip(load({ ...complete, OIDC_TRUST_EMAIL: "maybe" }))))
        .toContain("OIDC_TRUST_EMAIL")
    }))

  it.effect("stops start-up naming what is missing when only some of the required settings are set", () =>
    Effect.gen(function*() {
      const { OIDC_CLIENT_ID: _, ...withoutClient } = complete
      const line = formatConfigError(yield* Effect.flip(load(withoutClient)))
      expect(line).toContain("OIDC_CLIENT_ID")
      expect(line).toContain("missing: OIDC_CLIENT_ID")
      const onlySecret = formatConfigError(yield* Effect.flip(load({ OIDC_CLIENT_SECRET: "s3cret-value" })))
      expect(onlySecret).toContain("OIDC_ISSUER")
      expect(onlySecret).not.toContain("s3cret-value")
      const badRedirect = formatConfigError(
        yield* Effect.flip(load({ ...complete, OIDC_ALLOWED_REDIRECTS: "chat.example.com" }))
      )
      expect(badRedirect).toContain("OIDC_ALLOWED_REDIRECTS")
    }))
})

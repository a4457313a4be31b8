/** Behaviour under attack or misuse: races, forged headers, crafted cursors, oversized tokens. */
import { describe, expect, it, layer } from "@effect/vitest"
import { Effect } from "effect"
import { call, createKey, signIn, signUp } from "./fixtures/Auth.js"
import { dialects } from "./fixtures/Database.js"
import { testServer } from "./fixtures/Server.js"

for (const dialect of dialects) {
  describe(`hardening on ${dialect}`, () => {
    layer(testServer({ dialect }), { excludeTestServices: true })((it) => {
      it.effect("one refresh token presented many times at once leaves no working session behind", () =>
        Effect.gen(function*() {
          // The first account is the admin; this one is a plain user.
          yield* signUp()
          // Several rounds: the race is about timing, and one round may not hit it.
          for (let round = 0; round < 5; round++) {
            const user = yield* signUp()
            const replies = yield* Effect.all(
              Array.from(
                { length: 6 },
                () => call("POST", "/api/v1/auth/refresh", { body: { refreshToken: user.refreshToken } })
              ),
              { concurrency: "unbounded" }
            )
            expect(replies.filter((reply) => reply.status === 200).length).toBeLessThanOrEqual(1)
            // Whoever won the rotation, the family was reused and is over: nothing it issued works.
            for (const reply of replies.filter((reply) => reply.status === 200)) {
              expect((yield* call("GET", "/api/v1/auth/me", { auth: reply.body.accessToken })).status).toBe(401)
              const again = yield* call("POST", "/api/v1/auth/refresh", {
                body: { refreshToken: reply.body.refreshToken }
              })
              expect(again.status).toBe(401)
            }
            expect((yield* call("GET", "/api/v1/auth/me", { auth: user.accessToken })).status).toBe(401)
          }
          // A new sign-in starts a new family.
          const user = yield* signUp()
          yield* call("POST", "/api/v1/auth/refresh", { body: { refreshToken: user.refreshToken } })
          yield* call("POST", "/api/v1/auth/refresh", { body: { refreshToken: user.refreshToken } })
          const fresh = yield* signIn(user.email, user.password)
          expect((yield* call("GET", "/api/v1/auth/me", { auth: fresh.accessToken })).status).toBe(200)
        }))

      it.effect("behind a proxy, the address is the hop the proxy appended, not what the client claims", () =>
        Effect.gen(function*() {
          const admin = yield* signUp()
          const user = yield* signUp()
          yield* call("POST", "/api/v1/auth/login", {
            body: { login: user.email, password: "wrong-password-1" },
            headers: { "x-forwarded-for": "6.6.6.6, 203.0.113.7" }
          })
          const events = yield* call("GET", `/api/v1/admin/audit-events?action=auth.login.failed&targetId=${user.id}`, {
            auth: admin.accessToken
          })
          expect(events.status).toBe(200)
          expect(events.body.items[0].ipAddress).toBe("203.0.113.7")
        }).pipe(Effect.provide(testServer({ dialect, env: { TRUST_PROXY: "true" } }))))

      it.effect("an API key cannot mint API keys, even with keys:manage", () =>
        Effect.gen(function*() {
          const user = yield* signUp()
          const key = yield* createKey(user, ["keys:manage"], {
            expiresAt: new Date(Date.now() + 60_000).toISOString()
          })
          const minted = yield* call("POST", "/api/v1/auth/api-keys", {
            auth: key.secret,
            body: { name: "forever", scopes: ["keys:manage"] }
          })
          expect(minted.status).toBe(403)
          expect(minted.body._tag).toBe("Forbidden")
          // Listing and revoking its owner's keys stays within the scope.
          expect((yield* call("GET", "/api/v1/auth/api-keys", { auth: key.secret })).status).toBe(200)
        }))

      it.effect("a crafted pagination cursor answers 422, not 500", () =>
        Effect.gen(function*() {
          const admin = yield* signUp()
          const crafted = [
            Buffer.from(JSON.stringify({ at: "not-a-date", id: "x" })).toString("base64url"),
            Buffer.from(JSON.stringify({ at: "2026-01-01T00:00:00.000Z", id: "1 OR 1=1" })).toString("base64url"),
            "%%%"
          ]
          for (const cursor of crafted) {
            for (const path of ["/api/v1/admin/users", "/api/v1/admin/audit-events"]) {
              const reply = yield* call("GET", `${path}?cursor=${encodeURIComponent(cursor)}`, {
                auth: admin.accessToken
              })
              expect(reply.status, `${path} ${cursor}`).toBe(422)
              expect(reply.body._tag).toBe("ValidationError")
            }
          }
        }).pipe(Effect.provide(testServer({ dialect }))))

      it.effect("an absurdly long bearer token is refused without being verified", () =>
        Effect.gen(function*() {
          const reply = yield* call("GET", "/api/v1/auth/me", { auth: `${"a".repeat(6000)}.${"b".repeat(6000)}.c` })
          expect(reply.status).toBe(401)
          expect(reply.headers["www-authenticate"]).toMatch(/^Bearer/)
        }))

      it.effect("the personal-data export includes what happened to the account, not only what it did", () =>
        Effect.gen(function*() {
          const user = yield* signUp()
          yield* call("POST", "/api/v1/auth/login", { body: { login: user.email, password: "wrong-password-2" } })
          const exported = yield* call("GET", "/api/v1/me/export", { auth: user.accessToken })
          expect(exported.status).toBe(200)
          const actions = (exported.body.auditEvents as Array<{ action: string }>).map((event) => event.action)
          expect(actions).toContain("auth.login.failed")
          expect(actions).toContain("user.registered")
        }))
    })
  })
}

describe("a burst of sign-ins", () => {
  it.live(
    "beyond the hashing queue answers 503 with Retry-After at once, and nothing breaks",
    () =>
      Effect.gen(function*() {
        const user = yield* signUp()
        const replies = yield* Effect.all(
          Array.from(
            { length: 8 },
            () => call("POST", "/api/v1/auth/login", { body: { login: user.email, password: user.password } })
          ),
          { concurrency: "unbounded" }
        )
        const busy = replies.filter((reply) => reply.status === 503)
        expect(busy.length).toBeGreaterThan(0)
        expect(replies.filter((reply) => reply.status === 200).length).toBeGreaterThan(0)
        for (const reply of busy) {
          expect(reply.body._tag).toBe("ServiceUnavailable")
          expect(reply.headers["retry-after"]).toBe("5")
        }
        // Once the burst is over, signing in works again.
        expect(
          (yield* call("POST", "/api/v1/auth/login", { body: { login: user.email, password: user.password } })).status
        )
          .toBe(200)
      }).pipe(
        Effect.provide(testServer({
          env: {
            // The production cost (128 MiB, a few hundred milliseconds), one at a time, a short queue.
            PASSWORD_HASH_COST: "17",
            PASSWORD_HASH_CONCURRENCY: "1",
            PASSWORD_HASH_QUEUE_LIMIT: "2"
          }
        }))
      ),
    60_000
  )
})

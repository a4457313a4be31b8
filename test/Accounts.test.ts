/**
 * Accounts as administrators manage them (create, erase, reset a password), as each user changes
 * their own (email address, username), closed registration, and the operator's way back in
 * (`npm run cli -- reset-password`), on both dialects over real HTTP.
 */
import { describe, expect, layer } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import * as Crypto from "node:crypto"
import { call, expectStatus, signIn, signUp, type TestUser } from "./fixtures/Auth.js"
import { dialects } from "./fixtures/Database.js"
import { runCli } from "./fixtures/Process.js"
import { testServer } from "./fixtures/Server.js"

const unique = () => Crypto.randomBytes(4).toString("hex")

const jwtSecret = "accounts-test-jwt-secret-0123456789abcdef"

class Admin extends Context.Tag("test/Accounts/Admin")<Admin, TestUser>() {}

const serverWithAdmin = (dialect: (typeof dialects)[number], env: Record<string, string> = {}) =>
  Layer.effect(Admin, signUp()).pipe(
    Layer.provideMerge(testServer({ dialect, env: { JWT_SECRET: jwtSecret, ...env } }))
  )

const login = (login: string, password: string) => call("POST", "/api/v1/auth/login", { body: { login, password } })

const auditActions = (admin: TestUser, targetId: string) =>
  Effect.map(
    call("GET", `/api/v1/admin/audit-events?targetId=${targetId}&limit=100`, { auth: admin.accessToken }),
    (reply) => (expectStatus(reply, 200).items as Array<{ action: string; actorId: string | null }>)
  )

const cli = (args: ReadonlyArray<string>) => runCli(args, { JWT_SECRET: jwtSecret, PASSWORD_HASH_COST: "14" })

for (const dialect of dialects) {
  layer(serverWithAdmin(dialect), { excludeTestServices: true })(`accounts on ${dialect}`, (it) => {
    describe("created by an administrator", () => {
      it.scoped("as a user unless a role is named; they sign in with the password given", () =>
        Effect.gen(function*() {
          const admin = yield* Admin
          const id = unique()
          const created = expectStatus(
            yield* call("POST", "/api/v1/admin/users", {
              auth: admin.accessToken,
              body: { email: `New-${id}@Example.com`, username: `new_${id}`, password: "a created passphrase" }
            }),
            201
          )
          expect(created).toMatchObject({ email: `new-${id}@example.com`, username: `new_${id}`, role: "user" })
          expect(created).not.toHaveProperty("passwordHash")
          expectStatus(yield* login(`new_${id}`, "a created passphrase"), 200)

          const second = expectStatus(
            yield* call("POST", "/api/v1/admin/users", {
              auth: admin.accessToken,
              body: {
                email: `admin-${id}@example.com`,
                username: `admin_${id}`,
                password: "another passphrase",
                role: "admin"
              }
            }),
            201
          )
          expect(second.role).toBe("admin")
          expect((yield* auditActions(admin, created.id)).map((event) => [event.action, event.actorId])).toContainEqual(
            [
              "user.created",
              admin.id
            ]
          )
        }))

      it.scoped("a taken name answers 409, an unknown role or a weak password 422: nothing is created", () =>
        Effect.gen(function*() {
          const admin = yield* Admin
          const before = expectStatus(
            yield* call("GET", "/api/v1/admin/users?limit=100", { auth: admin.accessToken }),
            200
          ).items.length
          const taken = yield* call("POST", "/api/v1/admin/users", {
            auth: admin.accessToken,
            body: { email: admin.email, username: `x_${unique()}`, password: "a long passphrase" }
          })
          expectStatus(taken, 409)
          const role = yield* call("POST", "/api/v1/admin/users", {
            auth: admin.accessToken,
            body: {
              email: `r-${unique()}@example.com`,
              username: `r_${unique()}`,
              password: "a long passphrase",
              role: "wizard"
            }
          })
          expect(expectStatus(role, 422).issues).toEqual([{ path: ["role"], message: "Unknown role \"wizard\"" }])
          const name = `weak_${unique()}`
          const weak = yield* call("POST", "/api/v1/admin/users", {
            auth: admin.accessToken,
            body: { email: `w-${unique()}@example.com`, username: name, password: name }
          })
          expectStatus(weak, 422)
          const after = expectStatus(
            yield* call("GET", "/api/v1/admin/users?limit=100", { auth: admin.accessToken }),
            200
          )
          expect(after.items.length).toBe(before)
        }))
    })

    describe("erased by an administrator", () => {
      it.scoped("the user, their content and their sessions go; not yourself, not an unknown id", () =>
        Effect.gen(function*() {
          const admin = yield* Admin
          const leaving = yield* signUp()
          const conversation = expectStatus(
            yield* call("POST", "/api/v1/conversations", { auth: leaving.accessToken, body: { title: "Mine" } }),
            201
          )
          expectStatus(yield* call("DELETE", `/api/v1/admin/users/${leaving.id}`, { auth: admin.accessToken }), 204)
          expectStatus(yield* call("GET", "/api/v1/auth/me", { auth: leaving.accessToken }), 401)
          expectStatus(yield* login(leaving.email, leaving.password), 401)
          // Someone may register with the freed name; the old conversation is not theirs.
          const newcomer = yield* signUp({ email: leaving.email, username: leaving.username })
          expectStatus(
            yield* call("GET", `/api/v1/conversations/${conversation.id}`, { auth: newcomer.accessToken }),
            404
          )
          expect((yield* auditActions(admin, leaving.id)).map((event) => [event.action, event.actorId])).toContainEqual(
            [
              "user.erased",
              admin.id
            ]
          )

          expectStatus(yield* call("DELETE", `/api/v1/admin/users/${admin.id}`, { auth: admin.accessToken }), 409)
          expectStatus(
            yield* call("DELETE", "/api/v1/admin/users/018f0000-0000-7000-8000-000000000000", {
              auth: admin.accessToken
            }),
            404
          )
        }))
    })

    describe("passwords reset", () => {
      it.scoped("by an administrator: the new one works, the old one and every session do not", () =>
        Effect.gen(function*() {
          const admin = yield* Admin
          const forgetful = yield* signUp()
          expectStatus(
            yield* call("POST", `/api/v1/admin/users/${forgetful.id}/password`, {
              auth: admin.accessToken,
              body: { password: "a fresh passphrase" }
            }),
            204
          )
          expectStatus(yield* call("GET", "/api/v1/auth/me", { auth: forgetful.accessToken }), 401)
          expectStatus(
            yield* call("POST", "/api/v1/auth/refresh", { body: { refreshToken: forgetful.refreshToken } }),
            401
          )
          expectStatus(yield* login(forgetful.email, forgetful.password), 401)
          expectStatus(yield* login(forgetful.email, "a fresh passphrase"), 200)
          expect((yield* auditActions(admin, forgetful.id)).map((event) => event.action)).toContain(
            "user.password.reset"
          )
          // The password policy applies as anywhere else.
          expectStatus(
            yield* call("POST", `/api/v1/admin/users/${forgetful.id}/password`, {
              auth: admin.accessToken,
              body: { password: forgetful.username }
            }),
            422
          )
          expectStatus(yield* login(forgetful.email, "a fresh passphrase"), 200)
        }))

      it.scoped(
        "by the operator's command: a new password printed once, the sessions ended; an unknown name changes nothing",
        () =>
          Effect.gen(function*() {
            const admin = yield* Admin
            const locked = yield* signUp()
            const run = yield* cli(["reset-password", locked.username])
            expect(run.code, run.stderr).toBe(0)
            const printed = /is now: (\S+)/.exec(run.stdout)?.[1]
            expect(printed).toBeDefined()
            expectStatus(yield* call("GET", "/api/v1/auth/me", { auth: locked.accessToken }), 401)
            expectStatus(yield* login(locked.email, locked.password), 401)
            expectStatus(yield* login(locked.email, printed!), 200)
            const events = yield* auditActions(admin, locked.id)
            expect(events.find((event) => event.action === "user.password.reset")?.actorId).toBe("cli")

            const unknown = yield* cli(["reset-password", `nobody_${unique()}`])
            expect(unknown.code).not.toBe(0)
            expect(unknown.stderr).toContain("No account")
            expectStatus(yield* login(locked.email, printed!), 200)
          }),
        { timeout: 120_000 }
      )
    })

    describe("roles", () => {
      it.scoped("created, given, changed and deleted by an administrator; a holder's access follows at once", () =>
        Effect.gen(function*() {
          const admin = yield* Admin
          const auth = { auth: admin.accessToken }
          const before = expectStatus(yield* call("GET", "/api/v1/admin/roles", auth), 200)
          expect(before.filter((role: { builtin: boolean }) => role.builtin).map((role: { name: string }) => role.name))
            .toEqual(["admin", "user"])
          const name = `reader-${unique()}`
          const created = expectStatus(
            yield* call("POST", "/api/v1/admin/roles", {
              ...auth,
              body: { name, description: "Reads only", permissions: ["conversations:read", "models:read"] }
            }),
            201
          )
          expect(created).toEqual({
            name,
            description: "Reads only",
            permissions: ["conversations:read", "models:read"],
            models: null,
            tokenBudget: null,
            builtin: false,
            userCount: 0
          })
          expectStatus(yield* call("POST", "/api/v1/admin/roles", { ...auth, body: { name, permissions: [] } }), 409)
          const unknown = yield* call("POST", "/api/v1/admin/roles", {
            ...auth,
            body: { name: `x-${unique()}`, permissions: ["fly"] }
          })
          expect(expectStatus(unknown, 422).issues[0].path).toEqual(["permissions", 0])

          const holder = yield* signUp()
          expectStatus(
            yield* call("PUT", `/api/v1/admin/users/${holder.id}/role`, { ...auth, body: { role: name } }),
            200
          )
          expectStatus(yield* call("GET", "/api/v1/conversations", { auth: holder.accessToken }), 200)
          expectStatus(yield* call("POST", "/api/v1/conversations", { auth: holder.accessToken, body: {} }), 403)

          const widened = expectStatus(
            yield* call("PATCH", `/api/v1/admin/roles/${name}`, {
              ...auth,
              body: { permissions: ["conversations:read", "conversations:write", "models:read"] }
            }),
            200
          )
          expect(widened).toMatchObject({ name, description: "Reads only", userCount: 1 })
          expectStatus(yield* call("POST", "/api/v1/conversations", { auth: holder.accessToken, body: {} }), 201)

          for (const builtin of ["admin", "user"]) {
            expectStatus(
              yield* call("PATCH", `/api/v1/admin/roles/${builtin}`, { ...auth, body: { permissions: [] } }),
              409
            )
            expectStatus(yield* call("DELETE", `/api/v1/admin/roles/${builtin}`, auth), 409)
          }
          expectStatus(yield* call("DELETE", `/api/v1/admin/roles/${name}`, auth), 409)
          expectStatus(
            yield* call("PUT", `/api/v1/admin/users/${holder.id}/role`, { ...auth, body: { role: "user" } }),
            200
          )
          expectStatus(yield* call("DELETE", `/api/v1/admin/roles/${name}`, auth), 204)
          expectStatus(yield* call("DELETE", `/api/v1/admin/roles/${name}`, auth), 404)
          const after = expectStatus(yield* call("GET", "/api/v1/admin/roles", auth), 200)
          expect(after.map((role: { name: string }) => role.name)).not.toContain(name)
          expect((yield* auditActions(admin, created.name)).length).toBe(0)
          const byAdmin = expectStatus(
            yield* call("GET", `/api/v1/admin/audit-events?actorId=${admin.id}&targetType=role&limit=100`, auth),
            200
          )
          expect(byAdmin.items.map((event: { action: string }) => event.action).slice(0, 3)).toEqual([
            "role.deleted",
            "role.updated",
            "role.created"
          ])
        }))
    })

    describe("your own account", () => {
      it.scoped("a new email address and username, with the password given again; taken names answer 409", () =>
        Effect.gen(function*() {
          const user = yield* signUp()
          const other = yield* signUp()
          const id = unique()
          const wrong = yield* call("PATCH", "/api/v1/me", {
            auth: user.accessToken,
            body: { username: `renamed_${id}`, password: "not my password" }
          })
          expectStatus(wrong, 403)
          expectStatus(
            yield* call("PATCH", "/api/v1/me", {
              auth: user.accessToken,
              body: { username: other.username.toUpperCase(), password: user.password }
            }),
            409
          )
          expectStatus(
            yield* call("PATCH", "/api/v1/me", {
              auth: user.accessToken,
              body: { email: other.email, password: user.password }
            }),
            409
          )
          const renamed = expectStatus(
            yield* call("PATCH", "/api/v1/me", {
              auth: user.accessToken,
              body: { email: `renamed-${id}@example.com`, username: `renamed_${id}`, password: user.password }
            }),
            200
          )
          expect(renamed).toMatchObject({ id: user.id, email: `renamed-${id}@example.com`, username: `renamed_${id}` })
          // Still signed in; the new names sign in, the old ones no longer do.
          expectStatus(yield* call("GET", "/api/v1/auth/me", { auth: user.accessToken }), 200)
          expectStatus(yield* login(`renamed-${id}@example.com`, user.password), 200)
          expectStatus(yield* login(`renamed_${id}`, user.password), 200)
          expectStatus(yield* login(user.email, user.password), 401)
          const tokens = yield* signIn(`renamed_${id}`, user.password)
          const audit = expectStatus(yield* call("GET", "/api/v1/me/export", { auth: tokens.accessToken }), 200)
          expect(audit.auditEvents.map((event: { action: string }) => event.action)).toContain("user.updated")
        }))
    })
  })

  layer(serverWithAdmin(dialect, { REGISTRATION: "closed" }), { excludeTestServices: true })(
    `closed registration on ${dialect}`,
    (it) => {
      it.scoped("only the first account registers; an administrator creates the others", () =>
        Effect.gen(function*() {
          const admin = yield* Admin
          expect(admin.role).toBe("admin")
          const id = unique()
          const refused = yield* call("POST", "/api/v1/auth/register", {
            body: {
              email: `late-${id}@example.com`,
              username: `late_${id}`,
              password: "a long passphrase",
              acceptTerms: true
            }
          })
          expect(expectStatus(refused, 403)._tag).toBe("Forbidden")
          expectStatus(yield* login(`late_${id}`, "a long passphrase"), 401)
          expectStatus(
            yield* call("POST", "/api/v1/admin/users", {
              auth: admin.accessToken,
              body: { email: `late-${id}@example.com`, username: `late_${id}`, password: "a long passphrase" }
            }),
            201
          )
          expectStatus(yield* login(`late_${id}`, "a long passphrase"), 200)
        }))
    }
  )
}

/**
 * Users as administrators see them (list, role, disable/enable, erase, password reset) and as
 * each user sees their own account and personal data (identity, export, erasure, consent).
 */
import { SqlClient } from "@effect/sql"
import { DateTime, Effect, Option, Schema } from "effect"
import { type AuditEntry, AuditLog } from "./Audit.js"
import { Auth, lockAccountNames, toApiKeyView, toUserView } from "./Auth.js"
import { ApiKeysRepo } from "./Auth/ApiKeysRepo.js"
import { Passwords } from "./Auth/Passwords.js"
import { requirePermission, requireSession } from "./Auth/Policy.js"
import { RateLimits } from "./Auth/RateLimits.js"
import { SessionsRepo } from "./Auth/SessionsRepo.js"
import { isPermission } from "./Domain/Actor.js"
import { Conflict, Forbidden, orNotFound } from "./Domain/Errors.js"
import type { LlmModelId, UserId } from "./Domain/Ids.js"
import { decodeCursor, defaultLimit, toPage } from "./Domain/Pagination.js"
import { BuiltinRoles, Role, type RoleName } from "./Domain/User.js"
import { FilesRepo } from "./Files/FilesRepo.js"
import { FileStorage } from "./Files/Storage.js"
import { checkedModelList } from "./Models/ModelAllowlist.js"
import { ModelsRepo } from "./Models/ModelsRepo.js"
import { inTransaction, storedNow, transactionLock } from "./Sql.js"
import {
  Consent,
  type CreateRolePayload,
  type DeleteAccountPayload,
  PersonalDataExport,
  type ResetPasswordPayload,
  RoleView,
  type UpdateAccountPayload,
  type UpdateConsentPayload,
  type UpdateRolePayload
} from "./Users/Api.js"
import { resetPassword as resetPasswordOf } from "./Users/PasswordReset.js"
import { PersonalDataRepo } from "./Users/PersonalDataRepo.js"
import { UsersRepo, type UserWithRole } from "./Users/UsersRepo.js"

type UserRow = typeof UserWithRole.Type

const consentOf = (user: UserRow) =>
  new Consent({
    termsAcceptedAt: user.termsAcceptedAt,
    marketingConsent: user.marketingConsent,
    marketingConsentAt: Option.getOrNull(user.marketingConsentAt)
  })

export class Users extends Effect.Service<Users>()("Users", {
  effect: Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const users = yield* UsersRepo
    const modelsRepo = yield* ModelsRepo
    const apiKeys = yield* ApiKeysRepo
    const sessions = yield* SessionsRepo
    const personalData = yield* PersonalDataRepo
    const files = yield* FilesRepo
    const storage = yield* FileStorage
    const passwords = yield* Passwords
    const rateLimits = yield* RateLimits
    const audit = yield* AuditLog
    const auth = yield* Auth
    const services = yield* Effect.context<SqlClient.SqlClient | UsersRepo | SessionsRepo | Passwords | AuditLog>()

    const findUser = (id: UserId) => users.findById(id).pipe(orNotFound("No such user"))

    /**
     * The server must always keep one usable admin. Called inside the transaction that makes the
     * change, it first takes the admins lock, so two admins demoting each other at once cannot
     * both pass the count.
     */
    const ensureNotLastAdmin = (user: UserRow, what: string) =>
      Effect.gen(function*() {
        yield* transactionLock(sql, "admins")
        if (user.roleName !== BuiltinRoles.admin || user.disabled) return
        if ((yield* users.countActiveAdmins) <= 1) {
          return yield* new Conflict({ message: `Cannot ${what} the last admin; make another user admin first` })
        }
      })

    const listUsers = (page: { readonly limit?: number | undefined; readonly cursor?: string | undefined }) =>
      Effect.gen(function*() {
        yield* requirePermission("admin:users")
        const limit = page.limit ?? defaultLimit
        const rows = yield* users.list(yield* decodeCursor(page.cursor), limit)
        const { items, nextCursor } = toPage(rows, limit, (user) => ({
          at: DateTime.formatIso(user.createdAt),
          id: user.id
        }))
        return { items: items.map(toUserView), nextCursor }
      }).pipe(Effect.withSpan("Users.listUsers"))

    const setRole = (id: UserId, roleName: RoleName) =>
      Effect.gen(function*() {
        const actor = yield* requirePermission("admin:users")
        const user = yield* findUser(id)
        const role = yield* auth.knownRole(roleName)
        if (role.name === user.roleName) return toUserView(user)
        yield* ensureNotLastAdmin(user, "demote")
        yield* users.setRole(user.id, role.id)
        yield* audit.record({
          action: "user.role.changed",
          actor,
          target: { type: "user", id: user.id },
          metadata: { from: user.roleName, to: role.name }
        })
        return toUserView(yield* findUser(id))
      }).pipe(inTransaction(sql), Effect.withSpan("Users.setRole"))

    const setDisabled = (id: UserId, disabled: boolean) =>
      Effect.gen(function*() {
        const actor = yield* requirePermission("admin:users")
        const user = yield* findUser(id)
        if (user.disabled === disabled) return toUserView(user)
        if (disabled) yield* ensureNotLastAdmin(user, "disable")
        yield* users.setDisabled(user.id, disabled)
        // Sessions end for good; API keys stop working while disabled and resume if re-enabled.
        if (disabled) yield* sessions.revokeAllForUser(user.id, "user-disabled")
        yield* audit.record({
          action: disabled ? "user.disabled" : "user.enabled",
          actor,
          target: { type: "user", id: user.id }
        })
        return toUserView(yield* findUser(id))
      }).pipe(inTransaction(sql), Effect.withSpan("Users.setDisabled"))

    // --- roles

    const roleView = (role: typeof Role.Type, userCount: number) =>
      new RoleView({
        name: role.name,
        description: role.description,
        permissions: role.permissions.filter(isPermission),
        models: role.models,
        tokenBudget: role.tokenBudget,
        builtin: role.builtin,
        userCount
      })

    const listRoles = Effect.gen(function*() {
      yield* requirePermission("admin:roles")
      return (yield* users.listRoles).map((role) => roleView(role, role.userCount))
    }).pipe(Effect.withSpan("Users.listRoles"))

    /** A role by name that may be changed: it exists (404) and is not built in (409). */
    const changeableRole = (name: RoleName, what: string) =>
      Effect.gen(function*() {
        const role = yield* users.findRoleByName(name).pipe(orNotFound("No such role"))
        if (role.builtin) return yield* new Conflict({ message: `The built-in role "${name}" cannot be ${what}` })
        return role
      })

    /** A role's list of models, checked to name models (enabled or not: an administrator sets it); null: every model. */
    const roleModels = (ids: ReadonlyArray<LlmModelId> | null) =>
      ids === null
        ? Effect.succeed(null)
        : checkedModelList(modelsRepo, ids, {
          usableOnly: false,
          message: "A role can be limited to existing models only"
        })

    const createRole = (payload: CreateRolePayload) =>
      Effect.gen(function*() {
        const actor = yield* requirePermission("admin:roles")
        if (Option.isSome(yield* users.findRoleByName(payload.name))) {
          return yield* new Conflict({ message: `A role named "${payload.name}" exists` })
        }
        const role = yield* users.insertRole(Role.insert.make({
          name: payload.name,
          description: payload.description,
          permissions: Array.from(new Set(payload.permissions)),
          models: yield* roleModels(payload.models),
          tokenBudget: payload.tokenBudget,
          builtin: false
        }))
        yield* audit.record({
          action: "role.created",
          actor,
          target: { type: "role", id: role.id },
          metadata: {
            name: role.name,
            permissions: role.permissions,
            models: role.models,
            tokenBudget: role.tokenBudget
          }
        })
        return roleView(role, 0)
      }).pipe(inTransaction(sql), Effect.withSpan("Users.createRole"))

    const updateRole = (name: RoleName, payload: UpdateRolePayload) =>
      Effect.gen(function*() {
        const actor = yield* requirePermission("admin:roles")
        const role = yield* changeableRole(name, "changed")
        const updated = yield* users.updateRole(Role.update.make({
          id: role.id,
          name: role.name,
          builtin: role.builtin,
          description: payload.description ?? role.description,
          permissions: payload.permissions === undefined ? role.permissions : Array.from(new Set(payload.permissions)),
          models: payload.models === undefined ? role.models : yield* roleModels(payload.models),
          tokenBudget: payload.tokenBudget === undefined ? role.tokenBudget : payload.tokenBudget
        }))
        yield* audit.record({
          action: "role.updated",
          actor,
          target: { type: "role", id: role.id },
          metadata: {
            name: role.name,
            from: role.permissions,
            to: updated.permissions,
            ...(payload.models === undefined ? {} : { modelsFrom: role.models, modelsTo: updated.models }),
            ...(payload.tokenBudget === undefined ? {} : {
              tokenBudgetFrom: role.tokenBudget,
              tokenBudgetTo: updated.tokenBudget
            })
          }
        })
        return roleView(updated, yield* users.countWithRole(role.id))
      }).pipe(inTransaction(sql), Effect.withSpan("Users.updateRole"))

    const deleteRole = (name: RoleName) =>
      Effect.gen(function*() {
        const actor = yield* requirePermission("admin:roles")
        const role = yield* changeableRole(name, "deleted")
        const holders = yield* users.countWithRole(role.id)
        if (holders > 0) {
          return yield* new Conflict({ message: `${holders} account(s) hold this role; give them another first` })
        }
        yield* users.deleteRole(role.id)
        yield* audit.record({
          action: "role.deleted",
          actor,
          target: { type: "role", id: role.id },
          metadata: { name }
        })
      }).pipe(inTransaction(sql), Effect.withSpan("Users.deleteRole"))

    const exportData = Effect.gen(function*() {
      const actor = yield* requireSession
      const user = yield* users.get(actor.userId)
      const data = yield* personalData.collect(user.id)
      const keys = yield* apiKeys.listForUser(user.id)
      const events = yield* audit.aboutUser(user.id)
      yield* audit.record({ action: "user.exported", actor, target: { type: "user", id: user.id } })
      return new PersonalDataExport({
        exportedAt: yield* DateTime.now,
        user: toUserView(user),
        consent: consentOf(user),
        sessions: yield* Schema.decodeUnknown(PersonalDataExport.fields.sessions)(data.sessions).pipe(Effect.orDie),
        identities: yield* Schema.decodeUnknown(PersonalDataExport.fields.identities)(data.identities).pipe(
          Effect.orDie
        ),
        apiKeys: keys.map(toApiKeyView),
        conversations: data.conversations,
        files: data.files,
        fileAnalyses: data.fileAnalyses,
        graph: data.graph,
        shares: data.shares,
        modelConfigs: data.modelConfigs,
        usage: data.usage,
        feedback: data.feedback,
        auditEvents: events
      })
    }).pipe(Effect.withSpan("Users.exportData"))

    /** Erases `user` and everything in it; the last admin stays. */
    const erase = (user: UserRow, actor: AuditEntry["actor"]) =>
      Effect.gen(function*() {
        const contents = yield* Effect.gen(function*() {
          yield* ensureNotLastAdmin(user, "delete")
          const contents = yield* files.storageKeysOf(user.id)
          // Cascades to sessions, API keys, conversations, messages, threads, files and personal presets.
          yield* users.delete(user.id)
          yield* audit.pseudonymize(user.id)
          yield* audit.record({
            action: "user.erased",
            actor,
            target: { type: "user", id: user.id },
            // Erasing oneself leaves no trace of where from.
            withoutClient: "userId" in actor ? actor.userId === user.id : actor.id === user.id
          })
          return contents
        }).pipe(inTransaction(sql))
        // The files' contents go once their rows are gone for good.
        yield* Effect.forEach(contents, (key) => Effect.ignoreLogged(storage.remove(key)), { discard: true })
      })

    /** The signed-in user (and their session), once they have given their password again (rate limited like a login). */
    const confirmedSelf = (password: DeleteAccountPayload["password"]) =>
      Effect.gen(function*() {
        const actor = yield* requireSession
        yield* rateLimits.authAttempt("password", actor.userId)
        const user = yield* users.get(actor.userId)
        const { valid } = yield* passwords.verify(password, user.passwordHash)
        if (!valid) return yield* new Forbidden({ message: "The password is incorrect" })
        return { actor, user }
      })

    const deleteAccount = (payload: DeleteAccountPayload) =>
      Effect.flatMap(confirmedSelf(payload.password), ({ user }) => erase(user, { type: "user", id: user.id })).pipe(
        Effect.withSpan("Users.deleteAccount")
      )

    const deleteUser = (id: UserId) =>
      Effect.gen(function*() {
        const actor = yield* requirePermission("admin:users")
        const user = yield* findUser(id)
        if (user.id === actor.userId) {
          return yield* new Conflict({ message: "Erase your own account with DELETE /api/v1/me" })
        }
        yield* erase(user, actor)
      }).pipe(Effect.withSpan("Users.deleteUser"))

    const resetPassword = (id: UserId, payload: ResetPasswordPayload) =>
      Effect.gen(function*() {
        const actor = yield* requirePermission("admin:users")
        const user = yield* findUser(id)
        yield* Effect.provide(resetPasswordOf(user, payload.password, actor), services)
      }).pipe(Effect.withSpan("Users.resetPassword"))

    const updateAccount = (payload: UpdateAccountPayload) =>
      Effect.gen(function*() {
        const { actor, user } = yield* confirmedSelf(payload.password)
        const identity = {
          ...(payload.email !== undefined && payload.email !== user.email ? { email: payload.email } : {}),
          ...(payload.username !== undefined && payload.username !== user.username
            ? { username: payload.username }
            : {})
        }
        const changed = Object.keys(identity)
        if (changed.length === 0) return toUserView(user)
        yield* Effect.gen(function*() {
          yield* lockAccountNames(sql)
          const taken = yield* Effect.forEach(
            Object.values(identity),
            (login) => Effect.map(users.findByLogin(login), Option.filter((found) => found.id !== user.id))
          )
          if (taken.some(Option.isSome)) {
            return yield* new Conflict({ message: "That email address or username is already registered" })
          }
          yield* users.setIdentity(user.id, identity)
          yield* audit.record({
            action: "user.updated",
            actor,
            target: { type: "user", id: user.id },
            metadata: { changed }
          })
        }).pipe(inTransaction(sql))
        return toUserView(yield* users.get(user.id))
      }).pipe(Effect.withSpan("Users.updateAccount"))

    const getConsent = Effect.gen(function*() {
      const actor = yield* requireSession
      return consentOf(yield* users.get(actor.userId))
    })

    const updateConsent = (payload: UpdateConsentPayload) =>
      Effect.gen(function*() {
        const actor = yield* requireSession
        const user = yield* users.get(actor.userId)
        if (user.marketingConsent !== payload.marketingConsent) {
          const at = yield* storedNow
          yield* users.setConsent(user.id, payload.marketingConsent, payload.marketingConsent ? at : null)
          yield* audit.record({
            action: "user.consent.updated",
            actor,
            target: { type: "user", id: user.id },
            metadata: { marketingConsent: payload.marketingConsent }
          })
        }
        return consentOf(yield* users.get(actor.userId))
      }).pipe(Effect.withSpan("Users.updateConsent"))

    return {
      listUsers,
      listRoles,
      createRole,
      updateRole,
      deleteRole,
      setRole,
      setDisabled,
      deleteUser,
      resetPassword,
      exportData,
      updateAccount,
      deleteAccount,
      getConsent,
      updateConsent
    } as const
  })
}) {}

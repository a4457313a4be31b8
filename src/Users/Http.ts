import { HttpApiBuilder } from "@effect/platform"
import { Effect } from "effect"
import { WebPlusApi } from "../Api.js"
import { AuditLog } from "../Audit.js"
import { Auth } from "../Auth.js"
import { Users } from "../Users.js"

export const AdminHttpLive = HttpApiBuilder.group(WebPlusApi, "admin", (handlers) =>
  Effect.gen(function*() {
    const users = yield* Users
    const auth = yield* Auth
    const audit = yield* AuditLog
    return handlers
      .handle("listUsers", ({ urlParams }) => users.listUsers(urlParams))
      .handle("createUser", ({ payload }) => auth.createUser(payload))
      .handle("deleteUser", ({ path }) => users.deleteUser(path.id))
      .handle("resetPassword", ({ path, payload }) => users.resetPassword(path.id, payload))
      .handle("listRoles", () => users.listRoles)
      .handle("createRole", ({ payload }) => users.createRole(payload))
      .handle("updateRole", ({ path, payload }) => users.updateRole(path.name, payload))
      .handle("deleteRole", ({ path }) => users.deleteRole(path.name))
      .handle("setRole", ({ path, payload }) => users.setRole(path.id, payload.role))
      .handle("disableUser", ({ path }) => users.setDisabled(path.id, true))
      .handle("enableUser", ({ path }) => users.setDisabled(path.id, false))
      .handle("listAuditEvents", ({ urlParams: { cursor, limit, ...filter } }) =>
        audit.list(filter, { ...(limit ? { limit } : {}), ...(cursor ? { cursor } : {}) }))
  }))

export const MeHttpLive = HttpApiBuilder.group(WebPlusApi, "me", (handlers) =>
  Effect.gen(function*() {
    const users = yield* Users
    return handlers
      .handle("export", () => users.exportData)
      .handle("updateAccount", ({ payload }) => users.updateAccount(payload))
      .handle("deleteAccount", ({ payload }) => users.deleteAccount(payload))
      .handle("getConsent", () => users.getConsent)
      .handle("updateConsent", ({ payload }) => users.updateConsent(payload))
  }))

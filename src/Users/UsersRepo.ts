import { Model, SqlClient, SqlSchema } from "@effect/sql"
import { Effect, type Option, Schema } from "effect"
import type { RoleId } from "../Domain/Ids.js"
import { LlmModelId, UserId } from "../Domain/Ids.js"
import { Position } from "../Domain/Pagination.js"
import { Role, RoleName, User } from "../Domain/User.js"
import { storedNow } from "../Sql.js"

/** A user with what authentication needs to know about their role. */
export const UserWithRole = Schema.Struct({
  ...User.fields,
  roleName: RoleName,
  rolePermissions: Schema.parseJson(Schema.Array(Schema.String)),
  roleModels: Schema.parseJson(Schema.NullOr(Schema.Array(LlmModelId))),
  roleTokenBudget: Schema.NullOr(Schema.Int)
})

export class UsersRepo extends Effect.Service<UsersRepo>()("Users/UsersRepo", {
  effect: Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const repo = yield* Model.makeRepository(User, { tableName: "users", spanPrefix: "UsersRepo", idColumn: "id" })
    const roles = yield* Model.makeRepository(Role, { tableName: "roles", spanPrefix: "RolesRepo", idColumn: "id" })

    /** Every role with how many accounts hold it, by name. */
    const listRoles = SqlSchema.findAll({
      Request: Schema.Void,
      Result: Schema.Struct({ ...Role.fields, userCount: Schema.NumberFromString.pipe(Schema.int()) }),
      execute: () =>
        sql`SELECT roles.*, CAST((SELECT count(*) FROM users WHERE users.role_id = roles.id) AS TEXT) AS user_count
            FROM roles ORDER BY roles.name`
    })

    const selectWithRole = sql`
      SELECT users.*, roles.name AS role_name, roles.permissions AS role_permissions, roles.models AS role_models,
        roles.token_budget AS role_token_budget
      FROM users JOIN roles ON roles.id = users.role_id`

    const findWithRole = SqlSchema.findOne({
      Request: UserId,
      Result: UserWithRole,
      execute: (id) => sql`${selectWithRole} WHERE users.id = ${id}`
    })

    /**
     * The user of an access token, and whether its session family is still live (it exists and
     * none of its sessions was revoked): one round trip.
     */
    const findForSession = SqlSchema.findOne({
      Request: Schema.Struct({ userId: UserId, familyId: Schema.String }),
      Result: Schema.Struct({ ...UserWithRole.fields, sessionActive: Model.BooleanFromNumber }),
      execute: ({ familyId, userId }) =>
        sql`
          SELECT users.*, roles.name AS role_name, roles.permissions AS role_permissions, roles.models AS role_models,
            roles.token_budget AS role_token_budget,
            (
              EXISTS (SELECT 1 FROM sessions WHERE sessions.family_id = ${familyId} AND sessions.user_id = users.id)
              AND NOT EXISTS (
                SELECT 1 FROM sessions WHERE sessions.family_id = ${familyId} AND sessions.revoked_at IS NOT NULL
              )
            ) AS session_active
          FROM users JOIN roles ON roles.id = users.role_id
          WHERE users.id = ${userId}`
    })

    const findByLogin = SqlSchema.findOne({
      Request: Schema.String,
      Result: UserWithRole,
      execute: (login) =>
        sql`${selectWithRole} WHERE users.deleted_at IS NULL AND (users.email = ${login.toLowerCase()} OR lower(users.username) = ${login.toLowerCase()})`
    })

    const findRoleByName = SqlSchema.findOne({
      Request: Schema.String,
      Result: Role,
      execute: (name) => sql`SELECT * FROM roles WHERE name = ${name}`
    })

    const countUsers = Effect.map(
      sql<{ count: number }>`SELECT count(*) AS count FROM users`,
      (rows) => Number(rows[0]?.count ?? 0)
    )

    const countActiveAdmins = Effect.map(
      sql<{ count: number }>`
        SELECT count(*) AS count FROM users JOIN roles ON roles.id = users.role_id
        WHERE roles.name = 'admin' AND NOT users.disabled
          AND users.deleted_at IS NULL`,
      (rows) => Number(rows[0]?.count ?? 0)
    )

    const listPage = SqlSchema.findAll({
      Request: Schema.Struct({
        after: Schema.OptionFromNullOr(Position),
        limit: Schema.Number
      }),
      Result: UserWithRole,
      execute: ({ after, limit }) =>
        after === null
          ? sql`${selectWithRole} ORDER BY users.created_at, users.id LIMIT ${limit}`
          : sql`${selectWithRole}
              WHERE users.created_at > ${after.at} OR (users.created_at = ${after.at} AND users.id > ${after.id})
              ORDER BY users.created_at, users.id LIMIT ${limit}`
    })

    const touch = (id: UserId, fields: Record<string, unknown>) =>
      Effect.gen(function*() {
        const now = yield* storedNow
        yield* sql`UPDATE users SET ${sql.update({ ...fields, updatedAt: now })} WHERE id = ${id}`
      })

    return {
      insert: repo.insert,
      findById: (id: UserId) => Effect.orDie(findWithRole(id)),
      /** A user known to exist (the signed-in one, one just inserted). */
      get: (id: UserId) => Effect.orDie(Effect.flatten(findWithRole(id))),
      findByLogin: (login: string) => Effect.orDie(findByLogin(login)),
      findForSession: (userId: UserId, familyId: string) => Effect.orDie(findForSession({ userId, familyId })),
      findRoleByName: (name: string) => Effect.orDie(findRoleByName(name)),
      countUsers: Effect.orDie(countUsers),
      countActiveAdmins: Effect.orDie(countActiveAdmins),
      list: (after: Option.Option<Position>, limit: number) => Effect.orDie(listPage({ after, limit: limit + 1 })),
      setRole: (id: UserId, roleId: RoleId) => Effect.orDie(touch(id, { roleId })),
      setDisabled: (id: UserId, disabled: boolean) => Effect.orDie(touch(id, { disabled: disabled ? 1 : 0 })),
      setPasswordHash: (id: UserId, passwordHash: string) => Effect.orDie(touch(id, { passwordHash })),
      setIdentity: (id: UserId, identity: { readonly email?: string; readonly username?: string }) =>
        Effect.orDie(touch(id, identity)),
      setConsent: (id: UserId, marketingConsent: boolean, at: string | null) =>
        Effect.orDie(touch(id, { marketingConsent: marketingConsent ? 1 : 0, marketingConsentAt: at })),
      recordLogin: (id: UserId) =>
        Effect.orDie(
          Effect.flatMap(storedNow, (now) => touch(id, { lastLoginAt: now, failedLoginCount: 0 }))
        ),
      recordFailedLogin: (id: UserId) =>
        Effect.orDie(sql`UPDATE users SET failed_login_count = failed_login_count + 1 WHERE id = ${id}`),
      delete: (id: UserId) => Effect.orDie(sql`DELETE FROM users WHERE id = ${id}`),
      listRoles: Effect.orDie(listRoles(undefined)),
      insertRole: (role: typeof Role.insert.Type) => Effect.orDie(roles.insert(role)),
      updateRole: (role: typeof Role.update.Type) => Effect.orDie(roles.update(role)),
      deleteRole: (id: RoleId) => Effect.orDie(roles.delete(id)),
      countWithRole: (id: RoleId) =>
        Effect.orDie(Effect.map(
          sql<{ count: number }>`SELECT count(*) AS count FROM users WHERE role_id = ${id}`,
          (rows) => Number(rows[0]?.count ?? 0)
        ))
    } as const
  })
}) {}

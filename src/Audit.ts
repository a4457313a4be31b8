/**
 * The audit trail: who did what to which object, when, from where. Services
 * record events as part of what they do; admins read them back with filters.
 */
import { DateTime, Effect, FiberRef } from "effect"
import { type AuditFilter, AuditRepo } from "./Audit/AuditRepo.js"
import { requirePermission } from "./Auth/Policy.js"
import type { Actor } from "./Domain/Actor.js"
import { type ActorType, AuditEvent } from "./Domain/Credentials.js"
import type { JsonObject } from "./Domain/Fields.js"
import { decodeCursor, defaultLimit, toPage } from "./Domain/Pagination.js"
import { CurrentClient } from "./Http/Middleware.js"

export interface AuditEntry {
  readonly action: string
  readonly actor: Actor | { readonly type: ActorType; readonly id: string | null }
  readonly target?: { readonly type: string; readonly id: string }
  readonly metadata?: JsonObject
  /** Leave out the client's address and agent (an erasure must not record them again). */
  readonly withoutClient?: boolean
}

export class AuditLog extends Effect.Service<AuditLog>()("Audit/AuditLog", {
  effect: Effect.gen(function*() {
    const repo = yield* AuditRepo

    const record = (entry: AuditEntry): Effect.Effect<void> =>
      Effect.gen(function*() {
        const client = yield* FiberRef.get(CurrentClient)
        const actor = "userId" in entry.actor
          ? { type: entry.actor.via === "api_key" ? "api_key" as const : "user" as const, id: entry.actor.userId }
          : entry.actor
        yield* repo.insert(AuditEvent.insert.make({
          actorType: actor.type,
          actorId: actor.id,
          action: entry.action,
          targetType: entry.target?.type ?? null,
          targetId: entry.target?.id ?? null,
          ipAddress: entry.withoutClient ? null : client.address,
          userAgent: entry.withoutClient ? null : client.userAgent,
          metadata: {
            ...entry.metadata,
            ...("apiKeyId" in entry.actor && entry.actor.apiKeyId ? { apiKeyId: entry.actor.apiKeyId } : {})
          }
        }))
      }).pipe(Effect.withSpan("AuditLog.record", { attributes: { action: entry.action } }))

    const list = (filter: AuditFilter, page: { readonly limit?: number; readonly cursor?: string }) =>
      Effect.gen(function*() {
        yield* requirePermission("admin:audit")
        const limit = page.limit ?? defaultLimit
        const after = yield* decodeCursor(page.cursor)
        const rows = yield* repo.list(filter, after, limit)
        return toPage(rows, limit, (event) => ({ at: DateTime.formatIso(event.createdAt), id: event.id }))
      }).pipe(Effect.withSpan("AuditLog.list"))

    return { record, list, pseudonymize: repo.pseudonymize, aboutUser: repo.aboutUser } as const
  })
}) {}

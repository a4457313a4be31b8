/**
 * The knowledge graph: a model reads one of a user's sources (a conversation's active branch, or a
 * text file) in the background (the job queue `graph-extraction`) and names the entities and the
 * relationships in it, each with a confidence; they are merged into the user's graph, which the
 * user searches and reads. Reading a source again replaces what it contributed before. With
 * `EMBEDDING_MODEL`, entities are also embedded and searched by meaning (`Graph/Semantic.ts`).
 */
import * as PersistedQueue from "@effect/experimental/PersistedQueue"
import { SqlClient } from "@effect/sql"
import { Effect, Option, Schema } from "effect"
import { requirePermission } from "./Auth/Policy.js"
import { RateLimits } from "./Auth/RateLimits.js"
import { AppConfig } from "./Config.js"
import { ConversationRepo } from "./Conversations/ConversationRepo.js"
import type { Actor } from "./Domain/Actor.js"
import { invalid, NotFound, orNotFound } from "./Domain/Errors.js"
import { ApiKeyId, type ConversationId, type FileId, type UserId, UuidV7 } from "./Domain/Ids.js"
import { cursorOf, defaultLimit, pageByCreation, toPage } from "./Domain/Pagination.js"
import { cutText, hasReadableText } from "./Files/Content.js"
import { FilesRepo } from "./Files/FilesRepo.js"
import { FileStorage } from "./Files/Storage.js"
import { UsageRepo } from "./Gateway/UsageRepo.js"
import {
  EntityDetail,
  EntityView,
  ExtractionView,
  GraphExtractionId,
  GraphSource,
  MentionView,
  RelatedEntity,
  RelationshipView,
  type RequestExtractionPayload,
  SimilarEntities,
  SimilarEntity,
  type SimilarSearch,
  type SourceKind
} from "./Graph/Api.js"
import { type EntityRow, type ExtractionRow, type Findings, GraphRepo } from "./Graph/GraphRepo.js"
import { GraphSemantic } from "./Graph/Semantic.js"
import * as Jobs from "./Jobs.js"
import { ModelRegistry } from "./Models.js"
import { complete, jsonObjectIn, recordCompletionUsage } from "./Models/Completion.js"
import { EventHub, GraphExtractionEvent } from "./Models/Events.js"
import { inTransaction, storedNow } from "./Sql.js"

export const extractionQueue = "graph-extraction"
/** An extraction to run, and the API key it was requested with (its usage is recorded for the key too). */
export const ExtractionJob = Schema.Struct({ extractionId: GraphExtractionId, apiKeyId: Schema.optional(ApiKeyId) })

const entityCursor = cursorOf(Schema.Struct({ name: Schema.String, id: UuidV7 }))

const extractionPrompt = [
  "You build a knowledge graph. Read the text the user sends and answer with one JSON object only, no other",
  "text, of this shape:",
  `{"entities": [{"name": "…", "type": "person|organization|place|product|event|concept|…",`,
  `"description": "one sentence", "confidence": 0.9}],`,
  `"relationships": [{"source": "entity name", "target": "entity name", "type": "works_at|part_of|…",`,
  `"confidence": 0.8}]}`,
  "Only what the text states; confidence from 0 to 1; every relationship between two listed entities."
].join(" ")

const maxEntities = 200
const maxRelationships = 400

/**
 * A model's string, tidied: NFKC, no runs of spaces, at most `max` UTF-16 units (what the columns'
 * checks count). `jsonObjectIn` has taken NUL out already.
 */
const label = (value: unknown, max: number, transform: (text: string) => string = (text) => text): string | null => {
  if (typeof value !== "string") return null
  const text = cutText(transform(value.normalize("NFKC").trim().replace(/\s+/g, " ")), max).trim()
  return text.length === 0 ? null : text
}

/** A type as stored: lower case (before the cut: lower-casing may lengthen it), words joined by `_`. */
const typeLabel = (value: unknown): string | null =>
  label(value, 50, (text) => text.toLowerCase().replace(/[\s-]+/g, "_"))

const confidenceOf = (value: unknown): number =>
  typeof value === "number" && Number.isFinite(value) ? Math.min(1, Math.max(0, value)) : 0.5

/**
 * What a model's answer names, kept only where it is well formed: entities need a name and a
 * type; relationships need both ends among the entities (matched by name, case-blind) and a type.
 */
export const findingsIn = (answer: string): Findings => {
  const found = Option.getOrElse(jsonObjectIn(answer), () => ({} as Record<string, unknown>))
  const rawEntities = Array.isArray(found["entities"]) ? found["entities"] : []
  const rawRelationships = Array.isArray(found["relationships"]) ? found["relationships"] : []
  const entities: Array<Findings["entities"][number]> = []
  const byName = new Map<string, { name: string; type: string }>()
  for (const raw of rawEntities.slice(0, maxEntities)) {
    if (raw === null || typeof raw !== "object") continue
    const item = raw as Record<string, unknown>
    const name = label(item["name"], 200)
    const type = typeLabel(item["type"])
    if (name === null || type === null) continue
    entities.push({
      name,
      type,
      description: label(item["description"], 1000) ?? "",
      confidence: confidenceOf(item["confidence"])
    })
    if (!byName.has(name.toLowerCase())) byName.set(name.toLowerCase(), { name, type })
  }
  const relationships: Array<Findings["relationships"][number]> = []
  for (const raw of rawRelationships.slice(0, maxRelationships)) {
    if (raw === null || typeof raw !== "object") continue
    const item = raw as Record<string, unknown>
    const source = byName.get(label(item["source"], 200)?.toLowerCase() ?? "")
    const target = byName.get(label(item["target"], 200)?.toLowerCase() ?? "")
    const type = typeLabel(item["type"])
    if (source === undefined || target === undefined || type === null) continue
    relationships.push({ source, target, type, confidence: confidenceOf(item["confidence"]) })
  }
  return { entities, relationships }
}

const sourceOf = (kind: SourceKind, id: string) => new GraphSource({ kind, id }, true)

const extractionView = (row: ExtractionRow) =>
  new ExtractionView({
    id: row.id,
    source: sourceOf(row.sourceKind, row.sourceId),
    modelId: row.modelId,
    status: row.status,
    entityCount: row.entityCount,
    relationshipCount: row.relationshipCount,
    error: row.error,
    attempts: row.attempts,
    createdAt: row.createdAt,
    completedAt: row.completedAt
  }, true)

const entityView = (row: EntityRow) =>
  new EntityView({
    id: row.id,
    name: row.name,
    type: row.type,
    description: row.description,
    confidence: row.confidence,
    mentionCount: row.mentionCount,
    createdAt: row.createdAt,
    updatedAt: row.updatedAt
  }, true)

export class Graph extends Effect.Service<Graph>()("Graph", {
  scoped: Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const { files: fileSettings } = yield* AppConfig
    const repo = yield* GraphRepo
    const conversations = yield* ConversationRepo
    const files = yield* FilesRepo
    const storage = yield* FileStorage
    const registry = yield* ModelRegistry
    const events = yield* EventHub
    const semantic = yield* GraphSemantic
    const rateLimits = yield* RateLimits
    const usageRecords = yield* UsageRepo
    const transaction = inTransaction(sql)
    const jobs = yield* PersistedQueue.make({ name: extractionQueue, schema: ExtractionJob })

    const readable = requirePermission("conversations:read")
    const writable = requirePermission("conversations:write")

    /** The source a request names: exactly one, the user's own, with text to read. */
    const checkSource = (actor: Actor, payload: RequestExtractionPayload) =>
      Effect.gen(function*() {
        if ((payload.conversationId === undefined) === (payload.fileId === undefined)) {
          return yield* invalid(["conversationId"], "Name either a conversation or a file")
        }
        if (payload.conversationId !== undefined) {
          yield* conversations.findLive(actor.userId, payload.conversationId).pipe(orNotFound("No such conversation"))
          return { kind: "conversation" as const, id: payload.conversationId as string }
        }
        yield* requirePermission("files:read")
        const file = yield* files.findOwn(payload.fileId!, actor.userId).pipe(orNotFound("No such file"))
        if (!hasReadableText(file.contentType)) {
          return yield* invalid(["fileId"], `Text cannot be read from ${file.contentType} files`)
        }
        return { kind: "file" as const, id: file.id as string }
      })

    const requestExtraction = (payload: RequestExtractionPayload) =>
      Effect.gen(function*() {
        const actor = yield* writable
        yield* requirePermission("models:use")
        const source = yield* checkSource(actor, payload)
        // The same budgets and limits as a chat turn: an extraction is an answer asked of a model.
        yield* rateLimits.modelRequest(actor)
        const resolved = yield* registry.usableModel(payload.modelId)
        const row = yield* Jobs.storeAndOffer({
          transaction,
          store: repo.insertExtraction({
            userId: actor.userId,
            sourceKind: source.kind,
            sourceId: source.id,
            modelId: resolved.model.id
          }),
          queue: jobs,
          job: (inserted) => ({ value: { extractionId: inserted.id, apiKeyId: actor.apiKeyId }, id: inserted.id }),
          abandon: (inserted) =>
            repo.setExtraction(inserted.id, { status: "error", error: "The job queue could not be reached" })
        })
        return extractionView(row)
      }).pipe(Effect.withSpan("Graph.requestExtraction"))

    const getExtraction = (id: GraphExtractionId) =>
      Effect.gen(function*() {
        const actor = yield* readable
        return extractionView(yield* repo.findExtraction(id, actor.userId).pipe(orNotFound("No such extraction")))
      })

    const listExtractions = (query: { readonly limit?: number | undefined; readonly cursor?: string | undefined }) =>
      Effect.gen(function*() {
        const actor = yield* readable
        const page = yield* pageByCreation(query, (after, rows) => repo.extractionsPage(actor.userId, after, rows))
        return { items: page.items.map(extractionView), nextCursor: page.nextCursor }
      }).pipe(Effect.withSpan("Graph.listExtractions"))

    const searchEntities = (query: {
      readonly q?: string | undefined
      readonly type?: string | undefined
      readonly minConfidence?: number | undefined
      readonly limit?: number | undefined
      readonly cursor?: string | undefined
    }) =>
      Effect.gen(function*() {
        const actor = yield* readable
        const limit = query.limit ?? defaultLimit
        const after = yield* entityCursor.decode(query.cursor)
        const rows = yield* repo.search(actor.userId, query, after, limit + 1)
        const page = toPage(rows, limit, (row) => ({ name: row.normalizedName, id: row.id }), entityCursor.encode)
        return { items: page.items.map(entityView), nextCursor: page.nextCursor }
      }).pipe(Effect.withSpan("Graph.searchEntities"))

    const getEntity = (id: string) =>
      Effect.gen(function*() {
        const actor = yield* readable
        const entity = yield* repo.findEntity(id, actor.userId).pipe(orNotFound("No such entity"))
        const relationships = yield* repo.relationshipsOf(entity.id)
        const mentions = yield* repo.mentionsOf(entity.id)
        return new EntityDetail({
          entity: entityView(entity),
          relationships: relationships.map((row) =>
            new RelationshipView({
              type: row.type,
              direction: row.outgoing ? "outgoing" : "incoming",
              entity: new RelatedEntity({ id: row.otherId, name: row.otherName, type: row.otherType }, true),
              confidence: row.confidence,
              source: sourceOf(row.sourceKind, row.sourceId)
            }, true)
          ),
          mentions: mentions.map((row) =>
            new MentionView({
              source: sourceOf(row.sourceKind, row.sourceId),
              confidence: row.confidence,
              createdAt: row.createdAt
            }, true)
          )
        }, true)
      }).pipe(Effect.withSpan("Graph.getEntity"))

    /** The caller's entities closest in meaning to a text (`GraphSemantic`), best first. */
    const similarEntities = (query: typeof SimilarSearch.Type) =>
      Effect.gen(function*() {
        const actor = yield* readable
        // It asks a model, as an extraction does.
        yield* requirePermission("models:use")
        // The query is embedded by a model: within the same budgets and limits as a chat turn, once
        // search is known to be on.
        const found = yield* semantic.similar(
          { userId: actor.userId, apiKeyId: actor.apiKeyId ?? null },
          query,
          rateLimits.modelRequest(actor)
        )
        return new SimilarEntities({
          items: found.map(({ entity, score }) => new SimilarEntity({ entity: entityView(entity), score }, true))
        }, true)
      }).pipe(Effect.withSpan("Graph.similarEntities"))

    const deleteEntity = (id: string) =>
      Effect.gen(function*() {
        const actor = yield* writable
        if (!(yield* repo.deleteEntity(id, actor.userId))) return yield* new NotFound({ message: "No such entity" })
      }).pipe(Effect.withSpan("Graph.deleteEntity"))

    // --- the worker

    /** A source's text as the model reads it; `None` when the source is gone. */
    const textOf = (userId: UserId, kind: SourceKind, id: string) =>
      Effect.gen(function*() {
        const max = fileSettings.analysisMaxChars
        if (kind === "file") {
          const file = yield* files.findOwn(id as FileId, userId)
          if (Option.isNone(file)) return Option.none<string>()
          return Option.some(yield* storage.readText(file.value, file.value.contentType, max))
        }
        const live = yield* conversations.liveBranch(userId, id as ConversationId)
        if (Option.isNone(live)) return Option.none<string>()
        const text = live.value.branch
          .filter((message) => message.content.length > 0)
          .map((message) => `${message.role}: ${message.content}`)
          .join("\n\n")
        // The newest part of a long conversation.
        return Option.some(text.length <= max ? text : text.slice(text.length - max))
      })

    /** The owner's event sockets hear that an extraction ended (`graph.extraction`). */
    const announce = (
      job: ExtractionRow,
      status: "complete" | "error",
      counts = { entities: 0, relationships: 0 }
    ) =>
      Effect.flatMap(storedNow, (at) =>
        events.publish(
          new GraphExtractionEvent({
            extractionId: job.id,
            ownerId: job.userId,
            status,
            entityCount: counts.entities,
            relationshipCount: counts.relationships,
            at
          })
        ))

    /** Ends an extraction as `error` with `reason`, unless it has ended already. */
    const endInError = (extractionId: GraphExtractionId, reason: string) =>
      Effect.gen(function*() {
        const found = yield* repo.extractionById(extractionId)
        if (Option.isNone(found) || found.value.status === "complete" || found.value.status === "error") return
        yield* repo.setExtraction(extractionId, { status: "error", error: reason })
        yield* announce(found.value, "error")
      })

    /**
     * Runs one extraction: reads the source, asks the model, merges what it found. A provider that
     * fails is tried again by the queue; a failure no retry would mend ends it as `error` at once,
     * and so does the last attempt.
     */
    const extract = ({ apiKeyId, extractionId }: typeof ExtractionJob.Type, attempt: Jobs.Attempt) =>
      Effect.gen(function*() {
        const found = yield* repo.extractionById(extractionId)
        if (Option.isNone(found) || found.value.status === "complete" || found.value.status === "error") return
        const job = found.value
        const fail = (message: string) => endInError(extractionId, message)
        yield* repo.setExtraction(extractionId, { status: "processing", attempts: attempt.attempts + 1 })
        const text = yield* Effect.either(textOf(job.userId, job.sourceKind, job.sourceId))
        if (text._tag === "Left" || Option.isNone(text.right)) return yield* fail("The source is gone or unreadable")
        if (text.right.value.trim().length === 0) return yield* fail("The source has no text")
        if (job.modelId === null) return yield* fail("The model chosen for this extraction was removed")
        const resolved = yield* Effect.either(registry.resolveAny(job.modelId))
        if (resolved._tag === "Left") return yield* fail("The model chosen for this extraction was removed")
        const answer = yield* Effect.either(complete(resolved.right, {
          messages: [{ role: "system", content: extractionPrompt }, { role: "user", content: text.right.value }],
          temperature: 0,
          maxTokens: 4096
        }))
        if (answer._tag === "Left") {
          const reason = `The model could not be reached: ${answer.left.message}`
          yield* repo.setExtraction(extractionId, { status: "pending", error: reason })
          return yield* new Jobs.JobFailed({ message: reason })
        }
        // Recorded as soon as the model answered: a retry after a crash asks it again, and spends again.
        yield* recordCompletionUsage(
          usageRecords,
          { userId: job.userId, apiKeyId: apiKeyId ?? null },
          "extraction",
          resolved.right,
          answer.right
        )
        const findings = findingsIn(answer.right.text)
        // Stored only while the source still exists: one deleted while the model read it stays out.
        const stored = yield* transaction(
          Effect.flatMap(
            repo.holdSource(job.userId, job.sourceKind, job.sourceId),
            (held) =>
              held
                ? Effect.map(repo.storeFindings(job.userId, job.sourceKind, job.sourceId, findings), Option.some)
                : Effect.succeed(Option.none())
          )
        )
        if (Option.isNone(stored)) return yield* fail("The source was deleted while it was being read")
        yield* repo.setExtraction(extractionId, {
          status: "complete",
          error: null,
          entityCount: stored.value.entities,
          relationshipCount: stored.value.relationships
        })
        yield* announce(job, "complete", stored.value)
        // Its entities, and any others of the user's not embedded yet, for semantic search.
        yield* semantic.embedLater(job.userId)
      }).pipe(Effect.annotateLogs({ extractionId }))

    yield* Jobs.runWorkers(jobs, {
      name: extractionQueue,
      handle: extract,
      giveUp: ({ extractionId }, reason) => endInError(extractionId, reason)
    })

    return {
      requestExtraction,
      listExtractions,
      getExtraction,
      searchEntities,
      similarEntities,
      getEntity,
      deleteEntity
    } as const
  })
}) {}

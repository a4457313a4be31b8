/**
 * Semantic search over the knowledge graph, on when `EMBEDDING_MODEL` names a model (resolved
 * and used through `Models/Embedding.ts`): each
 * entity's type, name and description are embedded by that model (the job queue
 * `graph-embedding`, one job per user, queued when an extraction completes and, at start-up, for the
 * users whose entities the model has not embedded yet), and a search embeds its text and ranks the
 * user's vectors by cosine similarity.
 *
 * Ranking is done here, not in the database: a user's vectors are read as bytes a page at a time
 * (`pageSize`), so memory stays small whatever the size of the graph, and time grows with it (one
 * multiply-add per dimension and entity: 10,000 entities of 1,536 dimensions take some tens of
 * milliseconds). That suits a personal graph of up to some tens of thousands of entities.
 */
import { Effect, Either, Option, Schema } from "effect"
import { createHash } from "node:crypto"
import { RateLimits } from "../Auth/RateLimits.js"
import { AppConfig } from "../Config.js"
import { type NotFound, type RateLimited, type ServiceUnavailable } from "../Domain/Errors.js"
import { UserId } from "../Domain/Ids.js"
import type { Spender } from "../Gateway/UsageRepo.js"
import * as Jobs from "../Jobs.js"
import { cosine, embeddingJobs, EmbeddingModels } from "../Models/Embedding.js"
import type { ProviderFailure } from "../Models/Errors.js"
import type { GraphEntityId } from "./Api.js"
import { EmbeddingsRepo, type EmbeddingStateRow } from "./EmbeddingsRepo.js"
import type { EntityRow } from "./GraphRepo.js"

export const embeddingQueue = "graph-embedding"
export const EmbeddingJob = Schema.Struct({ userId: UserId })

/** Texts per embeddings request. */
const batchSize = 128

/** Vectors read at a time while ranking. */
const pageSize = 1000

const defaultSimilar = 10

/** What an entity's vector is made of. */
export const embeddedText = (entity: Pick<EmbeddingStateRow, "name" | "type" | "description">): string => {
  const head = `${entity.name} (${entity.type.replaceAll("_", " ")})`
  return entity.description.length > 0 ? `${head}: ${entity.description}` : head
}

const hashOf = (text: string) => createHash("sha256").update(text).digest("hex")

export class GraphSemantic extends Effect.Service<GraphSemantic>()("Graph/Semantic", {
  scoped: Effect.gen(function*() {
    const { embeddings: settings } = yield* AppConfig
    const repo = yield* EmbeddingsRepo
    const embeddings = yield* EmbeddingModels
    const rateLimits = yield* RateLimits

    /**
     * Embeds the user's entities that the configured model has not embedded from their present text,
     * `batchSize` to a request, within the user's token budget (spent: nothing is embedded, and the
     * next extraction tries again). Answers how many were embedded.
     */
    const embedUser = (name: string, { userId }: typeof EmbeddingJob.Type) =>
      Effect.gen(function*() {
        const model = yield* embeddings.resolve(name)
        const modelId = model.resolved.model.id
        const stale = (yield* repo.states(userId)).flatMap((row) => {
          const text = embeddedText(row)
          const textHash = hashOf(text)
          return row.modelId === modelId && row.textHash === textHash ? [] : [{ id: row.id, text, textHash }]
        })
        if (stale.length === 0) return 0
        const spent = yield* Effect.either(rateLimits.ownerBudget(userId))
        if (Either.isLeft(spent)) {
          yield* Effect.logInfo(`The knowledge graph's entities were not embedded: ${spent.left.message}`)
          return 0
        }
        for (let start = 0; start < stale.length; start += batchSize) {
          const batch = stale.slice(start, start + batchSize)
          const vectors = yield* embeddings.embed(model, batch.map((entity) => entity.text), batchSize, {
            spender: { userId, apiKeyId: null },
            source: "graph"
          })
          yield* Effect.forEach(batch, (entity, index) =>
            repo.store({ entityId: entity.id, modelId, vector: vectors[index]!, textHash: entity.textHash }))
        }
        return stale.length
      })

    const { embedLater: queue } = yield* embeddingJobs({
      queue: embeddingQueue,
      schema: EmbeddingJob,
      what: "a knowledge graph's entities",
      run: embedUser,
      // The next extraction tries again.
      giveUp: () => Effect.void,
      // Entities stored before semantic search was on, or embedded by another model. A user's job is
      // queued once a day from the same entities, however many instances start.
      backfill: (modelId) =>
        Effect.map(repo.usersToEmbed(modelId), (users) =>
          users.map(({ stamp, userId }) => ({
            job: { userId },
            id: Jobs.stableJobId(
              embeddingQueue,
              userId,
              Option.getOrElse(settings.model, () => ""),
              stamp,
              new Date().toISOString().slice(0, 10)
            )
          })))
    })

    /** Has the user's entities embedded in the background (when semantic search is on). */
    const embedLater = (userId: UserId): Effect.Effect<void> => queue({ job: { userId } })

    /**
     * The user's entities closest to `query.q`, best first, with their cosine similarity: the
     * vectors are read a page at a time and the best `limit` kept. `charge` (the caller's budgets and
     * limits) is paid once search is known to be on, before the query is embedded.
     */
    const similar = (
      spender: Spender,
      query: { readonly q: string; readonly limit?: number | undefined; readonly minScore?: number | undefined },
      charge: Effect.Effect<void, RateLimited>
    ): Effect.Effect<
      ReadonlyArray<{ readonly entity: EntityRow; readonly score: number }>,
      NotFound | RateLimited | ServiceUnavailable | ProviderFailure
    > =>
      Effect.gen(function*() {
        const { model, vector } = yield* embeddings.embedQuery(
          { off: "Semantic search", name: "Semantic search" },
          query.q,
          { spender, source: "graph" },
          charge
        )
        const { userId } = spender
        const limit = query.limit ?? defaultSimilar
        const minScore = query.minScore ?? -1
        const best: Array<{ readonly entityId: GraphEntityId; readonly score: number }> = []
        let after = Option.none<string>()
        for (;;) {
          const page = yield* repo.vectorsPage(userId, model.resolved.model.id, vector.length, after, pageSize)
          for (const row of page) {
            const score = cosine(vector, row.vector)
            if (score < minScore || (best.length === limit && score <= best[limit - 1]!.score)) continue
            // Pages come in entity order, so among equal scores the first entity stays first.
            let at = best.length
            while (at > 0 && best[at - 1]!.score < score) at--
            best.splice(at, 0, { entityId: row.entityId, score })
            if (best.length > limit) best.pop()
          }
          if (page.length < pageSize) break
          after = Option.some(page[page.length - 1]!.entityId)
        }
        const rows = new Map(
          (yield* repo.entities(userId, best.map((item) => item.entityId))).map((row) => [row.id, row])
        )
        // An entity deleted meanwhile is left out.
        return best.flatMap((item) => {
          const entity = rows.get(item.entityId)
          return entity === undefined ? [] : [{ entity, score: item.score }]
        })
      }).pipe(Effect.withSpan("GraphSemantic.similar"))

    return { similar, embedLater } as const
  })
}) {}

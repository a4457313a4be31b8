/**
 * The server's own embeddings (`EMBEDDING_MODEL`), shared by the knowledge graph's semantic search
 * (`Graph/Semantic.ts`) and the retrieval of attached files' passages (`Files/Passages.ts`): the model
 * resolved as the gateway names models, texts embedded in batches into unit vectors, vectors kept as
 * float32 bytes, and compared by cosine similarity; and the background jobs that keep each one's
 * vectors made (`embeddingJobs`).
 */
import * as PersistedQueue from "@effect/experimental/PersistedQueue"
import { Data, Effect, Option, type Schema, type Scope } from "effect"
import { AppConfig } from "../Config.js"
import { NotFound, type RateLimited, ServiceUnavailable } from "../Domain/Errors.js"
import type { LlmModelId } from "../Domain/Ids.js"
import { namedTargets, targetNamed } from "../Gateway.js"
import type { UsageSource } from "../Gateway/Schemas.js"
import { type Spender, UsageRepo } from "../Gateway/UsageRepo.js"
import * as Jobs from "../Jobs.js"
import { ModelRegistry, type ResolvedModel } from "../Models.js"
import { type Embedder, float32Bytes } from "../Providers/Embeddings.js"
import { ProviderError, type ProviderFailure } from "./Errors.js"
import { ModelsRepo } from "./ModelsRepo.js"
import { ProvidersRepo } from "./ProvidersRepo.js"

/** The configured model cannot embed now: no usable model has its name, or its provider has no embeddings API. */
export class EmbeddingUnavailable extends Data.TaggedError("EmbeddingUnavailable")<{ readonly message: string }> {}

/** The configured model, ready to embed. */
export interface EmbeddingModel {
  readonly resolved: ResolvedModel
  readonly embedder: Embedder
}

/** `vector` scaled to length 1 (a vector of zeros stays as it is: it is close to nothing). */
export const unit = (vector: ReadonlyArray<number>): Array<number> => {
  const length = Math.sqrt(vector.reduce((sum, value) => sum + value * value, 0))
  return length === 0 ? [...vector] : vector.map((value) => value / length)
}

/** A vector's float32 values as little-endian bytes, as vectors are stored. */
export const bytesOf = float32Bytes

/** The dot product of a unit query and a stored unit vector's little-endian float32 bytes: their cosine. */
export const cosine = (query: ReadonlyArray<number>, bytes: Uint8Array): number => {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  let sum = 0
  for (let index = 0; index < query.length; index++) sum += query[index]! * view.getFloat32(index * 4, true)
  // Rounding may take it a hair past ±1.
  return Math.max(-1, Math.min(1, sum))
}

export class EmbeddingModels extends Effect.Service<EmbeddingModels>()("Models/Embedding", {
  effect: Effect.gen(function*() {
    const { embeddings: settings } = yield* AppConfig
    const models = yield* ModelsRepo
    const providers = yield* ProvidersRepo
    const registry = yield* ModelRegistry
    const usage = yield* UsageRepo

    /**
     * The model `EMBEDDING_MODEL` names (`name`), as the gateway would find it among the usable
     * models, with its provider's embeddings API. Looked up at each use: a model added, enabled or
     * disabled later counts.
     */
    const resolve = (name: string): Effect.Effect<EmbeddingModel, EmbeddingUnavailable> =>
      Effect.gen(function*() {
        const targets = namedTargets(
          yield* models.list({ status: null, providerId: null, usableOnly: true }),
          yield* providers.list
        )
        const notUsable = new EmbeddingUnavailable({
          message: `the embedding model '${name}' (EMBEDDING_MODEL) is not a usable model`
        })
        const target = targetNamed(targets, name)
        if (target === undefined) return yield* notUsable
        const resolved = yield* registry.resolveAny(target.model.id).pipe(Effect.mapError(() => notUsable))
        if (Option.isNone(resolved.client.embedder)) {
          return yield* new EmbeddingUnavailable({
            message: `the embedding model '${name}' cannot create embeddings: its provider ` +
              `(${target.provider.name}) has no embeddings API`
          })
        }
        return { resolved, embedder: resolved.client.embedder.value }
      })

    /**
     * Unit vectors of `texts`, one per text in their order, `batchSize` texts to a request, each
     * request's tokens recorded for `spender` under `source` as soon as it is answered (a later
     * batch failing does not unspend an earlier one). A provider's answer that does not fit the
     * inputs fails.
     */
    const embed = (
      model: EmbeddingModel,
      texts: ReadonlyArray<string>,
      batchSize: number,
      spent: { readonly spender: Spender; readonly source: UsageSource }
    ): Effect.Effect<ReadonlyArray<ReadonlyArray<number>>, EmbeddingUnavailable | ProviderFailure> =>
      Effect.gen(function*() {
        const { connection, model: llm } = model.resolved
        const vectors: Array<ReadonlyArray<number>> = []
        for (let start = 0; start < texts.length; start += batchSize) {
          const batch = texts.slice(start, start + batchSize)
          const request = { model: llm.providerModel, input: { _tag: "texts" as const, texts: batch } }
          const refusal = model.embedder.refusal(request)
          if (refusal !== undefined) return yield* new EmbeddingUnavailable({ message: refusal.message })
          const answer = yield* model.embedder.embed(request)
          yield* usage.recordSpent({
            ...spent.spender,
            modelId: llm.id,
            modelName: llm.providerModel,
            source: spent.source,
            promptTokens: answer.promptTokens,
            completionTokens: 0
          })
          const malformed = answer.vectors.length !== batch.length ||
            answer.vectors.some((vector) =>
              vector.length === 0 || vector.length !== (vectors[0] ?? answer.vectors[0]!).length
            ) ||
            answer.vectors.some((vector) => vector.some((value) => !Number.isFinite(value)))
          if (malformed) {
            return yield* new ProviderError({
              message: `${connection.name} sent embeddings that do not fit the ${batch.length} inputs`,
              upstreamStatus: null
            })
          }
          vectors.push(...answer.vectors.map(unit))
        }
        return vectors
      })

    /**
     * A search's text as a unit vector of the configured model, for a feature that is on only with
     * `EMBEDDING_MODEL` (named in its failures: `off` when it is unset, `name` when it cannot be used
     * now): `NotFound` while the setting is unset, nothing paid; otherwise `charge` (the caller's
     * budgets and limits) is paid, then the model resolved and the text embedded, its tokens
     * recorded for `spender` under `source`. A model that cannot embed now is `ServiceUnavailable`.
     */
    const embedQuery = (
      feature: { readonly off: string; readonly name: string },
      text: string,
      spent: { readonly spender: Spender; readonly source: UsageSource },
      charge: Effect.Effect<void, RateLimited>
    ): Effect.Effect<
      { readonly model: EmbeddingModel; readonly vector: ReadonlyArray<number> },
      NotFound | RateLimited | ServiceUnavailable | ProviderFailure
    > =>
      Effect.gen(function*() {
        if (Option.isNone(settings.model)) {
          return yield* new NotFound({ message: `${feature.off} is not configured on this server` })
        }
        yield* charge
        const model = yield* resolve(settings.model.value)
        const [vector] = yield* embed(model, [text], 1, spent)
        return { model, vector: vector! }
      }).pipe(
        Effect.catchTag("EmbeddingUnavailable", (error) =>
          Effect.fail(new ServiceUnavailable({ message: `${feature.name} is unavailable: ${error.message}` })))
      )

    return { model: settings.model, resolve, embed, embedQuery } as const
  })
}) {}

/** A job to queue, with the id that makes the same work queued twice run once (`Jobs.stableJobId`), if any. */
export interface EmbeddingWork<A> {
  readonly job: A
  readonly id?: string | undefined
}

/**
 * The background embedding of one kind of thing (a file's passages, a user's knowledge graph) by the
 * model `EMBEDDING_MODEL` names, on the durable job queue `queue`:
 * - `embedLater` queues a job (nothing when the setting is unset; a queue that cannot take it is
 *   logged: the backfill makes up for it);
 * - a job's run (`run`, given the model's name) embeds what lacks that model's vectors and answers
 *   how many it embedded; a failure is logged with its reason and tried again by the queue, and
 *   `giveUp` records the last one;
 * - at start-up, `backfill` (given the model's id when it resolves now) names the work made before
 *   the setting was on, by another model, or given up, which is queued.
 *
 * Logs name the job's fields and the model, and `what` is embedded (say "a file's passages").
 */
export const embeddingJobs = <A extends Record<string, unknown>, I, E extends { readonly message: string }, R, R2>(
  options: {
    readonly queue: string
    readonly schema: Schema.Schema<A, I>
    readonly what: string
    readonly run: (model: string, job: A) => Effect.Effect<number, E, R>
    readonly giveUp: (job: A, reason: string) => Effect.Effect<void, never, R2>
    readonly backfill: (model: Option.Option<LlmModelId>) => Effect.Effect<ReadonlyArray<EmbeddingWork<A>>>
  }
): Effect.Effect<
  { readonly embedLater: (work: EmbeddingWork<A>) => Effect.Effect<void> },
  never,
  | R
  | R2
  | AppConfig
  | EmbeddingModels
  | PersistedQueue.PersistedQueueFactory
  | Jobs.JobQueueMonitor
  | Scope.Scope
> =>
  Effect.gen(function*() {
    const { embeddings: settings } = yield* AppConfig
    const embeddings = yield* EmbeddingModels
    const jobs = yield* PersistedQueue.make({ name: options.queue, schema: options.schema })

    yield* Jobs.runWorkers(jobs, {
      name: options.queue,
      handle: (job: A) =>
        Option.match(settings.model, {
          // Queued while the setting was on: nothing to do now.
          onNone: () => Effect.void,
          onSome: (name) =>
            options.run(name, job).pipe(
              Effect.tap((count) => count > 0 ? Effect.logDebug(`Embedded ${options.what}`, { count }) : Effect.void),
              Effect.catchAll((error) =>
                Effect.zipRight(
                  Effect.logWarning(`Could not embed ${options.what}: ${error.message}`),
                  Effect.fail(new Jobs.JobFailed({ message: error.message }))
                )
              ),
              Effect.asVoid,
              Effect.annotateLogs({ ...job, embeddingModel: name })
            )
        }),
      giveUp: (job, reason) =>
        Effect.zipRight(
          Effect.logWarning(`Gave up embedding ${options.what}: ${reason}`),
          options.giveUp(job, reason)
        ).pipe(Effect.annotateLogs(job))
    })

    const embedLater = ({ id, job }: EmbeddingWork<A>): Effect.Effect<void> =>
      Option.isNone(settings.model) ? Effect.void : jobs.offer(job, { id }).pipe(
        Effect.catchAllCause((cause) => Effect.logWarning(`Could not queue the embedding of ${options.what}`, cause)),
        Effect.asVoid
      )

    if (Option.isSome(settings.model)) {
      const name = settings.model.value
      yield* Effect.forkScoped(
        Effect.gen(function*() {
          const model = yield* Effect.option(embeddings.resolve(name))
          const work = yield* options.backfill(Option.map(model, (found) => found.resolved.model.id))
          yield* Effect.forEach(work, embedLater, { discard: true })
          if (work.length > 0) yield* Effect.logInfo(`Queued jobs to embed ${options.what}`, { jobs: work.length })
        }).pipe(
          Effect.catchAllCause((cause) =>
            Effect.logWarning(`Could not queue the start-up embedding of ${options.what}`, cause)
          )
        )
      )
    }

    return { embedLater } as const
  })

/**
 * A model asked for one whole answer, for work done in the background (titles, file analyses, the
 * knowledge graph), and the JSON object such an answer is asked to be. The tokens each answer took
 * are recorded for the user it was done for, as the chat and the gateway record theirs.
 */
import { Effect, Option, Stream } from "effect"
import type { UsageSource } from "../Gateway/Schemas.js"
import type { Spender, UsageRepo } from "../Gateway/UsageRepo.js"
import type { ResolvedModel } from "../Models.js"
import type { ChatRequest } from "../Providers/Chat.js"

/** The tokens a provider reported for one answer. */
export interface CompletionUsage {
  readonly promptTokens: number
  readonly completionTokens: number
}

/** A model's whole answer: its text (tool calls left aside), and the usage the provider reported, if it did. */
export interface Completion {
  readonly text: string
  readonly usage: Option.Option<CompletionUsage>
}

/** The model's answer to `request`; of several usage chunks, the last counts (each gives the answer's totals so far). */
export const complete = (resolved: ResolvedModel, request: Omit<ChatRequest, "model">) =>
  resolved.client.chat({ ...request, model: resolved.model.providerModel }).pipe(
    Stream.runFold(
      { text: "", usage: Option.none() } as Completion,
      (answer, chunk): Completion =>
        chunk._tag === "text"
          ? { ...answer, text: answer.text + chunk.text }
          : chunk._tag === "usage"
          ? {
            ...answer,
            usage: Option.some({ promptTokens: chunk.promptTokens, completionTokens: chunk.completionTokens })
          }
          : answer
    )
  )

/**
 * Records the usage of `completion`, an answer of `resolved` for `spender`, under `source`; nothing
 * when the provider reported none (`UsageRepo.recordSpent`: never the job's failure).
 */
export const recordCompletionUsage = (
  usage: UsageRepo,
  spender: Spender,
  source: UsageSource,
  resolved: ResolvedModel,
  completion: Completion
): Effect.Effect<void> =>
  Option.match(completion.usage, {
    onNone: () => Effect.void,
    onSome: (reported) =>
      usage.recordSpent({
        userId: spender.userId,
        apiKeyId: spender.apiKeyId,
        modelId: resolved.model.id,
        modelName: resolved.model.providerModel,
        source,
        ...reported
      })
  })

/** A JSON value with NUL taken out of its strings (PostgreSQL's text and jsonb refuse it). */
const withoutNul = (value: unknown): unknown => {
  if (typeof value === "string") return value.replace(/\0/g, "")
  if (Array.isArray(value)) return value.map(withoutNul)
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([key, item]) => [key.replace(/\0/g, ""), withoutNul(item)]))
  }
  return value
}

/** The JSON object in a model's answer: from its first `{` to its last `}` (models wrap JSON in prose and fences). */
export const jsonObjectIn = (answer: string): Option.Option<Record<string, unknown>> => {
  const start = answer.indexOf("{")
  const end = answer.lastIndexOf("}")
  if (start < 0 || end <= start) return Option.none()
  try {
    const parsed = withoutNul(JSON.parse(answer.slice(start, end + 1)))
    return parsed !== null && typeof parsed === "object" && !Array.isArray(parsed)
      ? Option.some(parsed as Record<string, unknown>)
      : Option.none()
  } catch {
    return Option.none()
  }
}

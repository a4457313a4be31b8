/**
 * A model asked for one whole answer, for work done in the background (titles, file analyses, the
 * knowledge graph), and the JSON object such an answer is asked to be.
 */
import { Option, Stream } from "effect"
import type { ResolvedModel } from "../Models.js"
import type { ChatRequest } from "../Providers/Chat.js"

/** The text of the model's answer to `request` (tool calls and usage left aside). */
export const completeText = (resolved: ResolvedModel, request: Omit<ChatRequest, "model">) =>
  resolved.client.chat({ ...request, model: resolved.model.providerModel }).pipe(
    Stream.runFold("", (text, chunk) => chunk._tag === "text" ? text + chunk.text : text)
  )

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

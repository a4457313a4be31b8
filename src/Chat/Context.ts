/**
 * What the model is sent: the active branch as chat messages, after the
 * system prompt, trimmed from the oldest turn until it fits the model's
 * context window with room left for the answer.
 *
 * Tokens are estimated (four characters to a token, plus a few per message
 * for the role markup): tokenizers differ per model and the estimate errs on
 * the generous side of real English text.
 */
import type { MessageView } from "../Domain/Conversation.js"
import { attachmentKey, attachmentsOf, type AttachmentTexts } from "../Files/Attachments.js"
import type { ChatMessage } from "../Providers/Chat.js"

const perMessageTokens = 4

export const estimateTokens = (message: ChatMessage): number =>
  Math.ceil(
    (message.content.length +
      (message.toolCalls ?? []).reduce((sum, call) => sum + call.name.length + call.arguments.length, 0)) / 4
  ) + perMessageTokens

/** Room kept for the answer when the preset sets no `maxTokens`. */
export const answerReserve = (contextWindow: number, maxTokens: number | null): number =>
  maxTokens ?? Math.min(1024, Math.floor(contextWindow / 4))

/** A question's text followed by the files it carries, each in an `<attachment>` element. */
const withAttachments = (message: MessageView, texts: AttachmentTexts): string => {
  const attached = attachmentsOf(message)
  if (attached.length === 0) return message.content
  const parts = [message.content]
  for (const { contentType, id, name } of attached) {
    const key = attachmentKey(message.id, id)
    if (!texts.has(key)) continue
    const text = texts.get(key)
    const label = JSON.stringify(name)
    parts.push(
      typeof text === "string"
        ? `<attachment name=${label} type="${contentType}">\n${text}\n</attachment>`
        : `[The attached file ${label} has been deleted]`
    )
  }
  return parts.join("\n\n")
}

const noTexts: AttachmentTexts = new Map()

/**
 * The branch's messages as the model reads them: answers cut short keep their text; empty ones are
 * left out; a question's attached files follow its text (`texts`, by file id).
 */
export const toChatMessages = (
  branch: ReadonlyArray<MessageView>,
  texts: AttachmentTexts = noTexts
): Array<ChatMessage> =>
  branch.flatMap((message): Array<ChatMessage> => {
    if (message.content.length === 0 && message.toolCalls.length === 0) return []
    const toolCallId = message.metadata["toolCallId"]
    return [{
      role: message.role,
      content: withAttachments(message, texts),
      ...(message.toolCalls.length > 0 ? { toolCalls: message.toolCalls } : {}),
      ...(message.role === "tool" && typeof toolCallId === "string" ? { toolCallId } : {})
    }]
  })

const systemMessages = (systemPrompt: string | null): Array<ChatMessage> =>
  systemPrompt ? [{ role: "system", content: systemPrompt }] : []

/** The tokens of `budget` left for the history once the system prompt is counted. */
const historyBudget = (system: ReadonlyArray<ChatMessage>, budget: number): number =>
  budget - system.reduce((sum, message) => sum + estimateTokens(message), 0)

/**
 * The system prompt (if any) and the newest messages that fit in `budget` tokens. The last
 * message is always kept, and the kept history starts with a user message, as every provider
 * expects.
 */
export const fitToContext = (
  systemPrompt: string | null,
  history: ReadonlyArray<ChatMessage>,
  budget: number
): Array<ChatMessage> => {
  const system = systemMessages(systemPrompt)
  let remaining = historyBudget(system, budget)
  let start = history.length
  while (start > 0) {
    const cost = estimateTokens(history[start - 1]!)
    if (cost > remaining && start < history.length) break
    remaining -= cost
    start--
  }
  while (start < history.length - 1 && history[start]!.role !== "user" && history[start]!.role !== "system") start++
  return [...system, ...history.slice(start)]
}

/**
 * Whether a branch read from its end up (`newestFirst`) already holds more history than
 * `fitToContext(systemPrompt, …, budget)` would keep: what lies above it would not be sent.
 */
export const fillsContext = (systemPrompt: string | null, budget: number) => {
  const remaining = historyBudget(systemMessages(systemPrompt), budget)
  return (newestFirst: ReadonlyArray<MessageView>): boolean => {
    let cost = 0
    for (const message of toChatMessages(newestFirst)) {
      cost += estimateTokens(message)
      if (cost > remaining) return true
    }
    return false
  }
}

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
import { type AttachmentContents, attachmentKey, attachmentsOf } from "../Files/Attachments.js"
import type { ChatChunk, ChatImage, ChatMessage, ChatRequest } from "../Providers/Chat.js"

const perMessageTokens = 4

/** What an image costs, estimated on the generous side (Anthropic counts about 1,600 for a 1.15-megapixel one). */
const perImageTokens = 1_600

export const estimateTokens = (message: ChatMessage): number =>
  Math.ceil(
    (message.content.length +
      (message.toolCalls ?? []).reduce((sum, call) => sum + call.name.length + call.arguments.length, 0)) / 4
  ) + perMessageTokens + (message.images?.length ?? 0) * perImageTokens

/** The window the tools' descriptions take (estimated as the messages are). */
export const toolTokens = ({ tools }: Pick<ChatRequest, "tools">): number =>
  tools === undefined ? 0 : Math.ceil(JSON.stringify(tools).length / 4)

/** What a request's prompt takes, estimated: its messages and its tools' descriptions. */
export const estimatePromptTokens = (request: Pick<ChatRequest, "messages" | "tools">): number =>
  request.messages.reduce((sum, message) => sum + estimateTokens(message), 0) + toolTokens(request)

/** Token counts, as a provider reports them or as estimated here. */
export interface TokenCounts {
  readonly promptTokens: number
  readonly completionTokens: number
}

/** What a provider has answered of one answer so far: the characters of its text and tool calls, and whether it finished. */
export interface Answered {
  outputCharacters: number
  finished: boolean
}

export const nothingAnswered = (): Answered => ({ outputCharacters: 0, finished: false })

/** Takes one chunk of an answer into what was answered. */
export const tally = (answered: Answered, chunk: ChatChunk): void => {
  switch (chunk._tag) {
    case "text":
      answered.outputCharacters += chunk.text.length
      break
    case "tool-call":
      answered.outputCharacters += (chunk.name?.length ?? 0) + chunk.arguments.length
      break
    case "finish":
      answered.finished = true
      break
  }
}

/**
 * The usage to count for an answer: what the provider reported; else an estimate if the provider
 * answered at all (text or tool calls came, or it said it was done) or the answer was `abandoned`
 * once asked for (the client left, a cancel: its prompt was sent). An answer cut before its usage
 * came, or from a provider that reports none, is still counted against budgets; null when the
 * provider failed without answering anything.
 */
export const usageToCount = (
  request: Pick<ChatRequest, "messages" | "tools">,
  reported: TokenCounts | null,
  answered: Answered,
  abandoned: boolean
): TokenCounts | null =>
  reported ??
    (answered.outputCharacters === 0 && !answered.finished && !abandoned
      ? null
      : { promptTokens: estimatePromptTokens(request), completionTokens: Math.ceil(answered.outputCharacters / 4) })

/** Room kept for the answer when the preset sets no `maxTokens`. */
export const answerReserve = (contextWindow: number, maxTokens: number | null): number =>
  maxTokens ?? Math.min(1024, Math.floor(contextWindow / 4))

/** A question's text followed by the texts of the files it carries, each in an `<attachment>` element; its images. */
const withAttachments = (
  message: MessageView,
  contents: AttachmentContents
): { readonly content: string; readonly images: ReadonlyArray<ChatImage> } => {
  const attached = attachmentsOf(message)
  if (attached.length === 0) return { content: message.content, images: [] }
  const parts = [message.content]
  const images: Array<ChatImage> = []
  for (const { contentType, id, name } of attached) {
    const key = attachmentKey(message.id, id)
    if (!contents.has(key)) continue
    const content = contents.get(key)
    const label = JSON.stringify(name)
    if (content === null || content === undefined) parts.push(`[The attached file ${label} has been deleted]`)
    else if (content._tag === "image") images.push(content.image)
    else parts.push(`<attachment name=${label} type="${contentType}">\n${content.text}\n</attachment>`)
  }
  return { content: parts.join("\n\n"), images }
}

const noContents: AttachmentContents = new Map()

/**
 * The branch's messages as the model reads them: answers cut short keep their text; empty ones are
 * left out; a question's attached files follow its text, or are shown as images (`contents`).
 */
export const toChatMessages = (
  branch: ReadonlyArray<MessageView>,
  contents: AttachmentContents = noContents
): Array<ChatMessage> =>
  branch.flatMap((message): Array<ChatMessage> => {
    if (message.content.length === 0 && message.toolCalls.length === 0) return []
    const toolCallId = message.metadata["toolCallId"]
    const { content, images } = withAttachments(message, contents)
    return [{
      role: message.role,
      content,
      ...(images.length > 0 ? { images } : {}),
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

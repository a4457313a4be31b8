/** What the model is sent: the branch fitted to its context window, and titles made from its answers. */
import { describe, expect, it } from "@effect/vitest"
import { cleanTitle, fallbackTitle } from "../src/Chat.js"
import { answerReserve, estimateTokens, fillsContext, fitToContext, toChatMessages } from "../src/Chat/Context.js"
import type { MessageView } from "../src/Domain/Conversation.js"
import type { ChatMessage } from "../src/Providers/Chat.js"

const turn = (role: ChatMessage["role"], words: number, tag: string): ChatMessage => ({
  role,
  content: `${tag} ${"word ".repeat(words)}`.trim()
})

describe("fitting the branch to the context window", () => {
  const history = [
    turn("user", 100, "q1"),
    turn("assistant", 100, "a1"),
    turn("user", 100, "q2"),
    turn("assistant", 100, "a2"),
    turn("user", 10, "q3")
  ]

  it("keeps everything that fits, after the system prompt", () => {
    const fitted = fitToContext("Be brief.", history, 10_000)
    expect(fitted.map((message) => message.content.split(" ")[0])).toEqual(["Be", "q1", "a1", "q2", "a2", "q3"])
    expect(fitted[0]).toEqual({ role: "system", content: "Be brief." })
  })

  it("drops the oldest turns first, and starts the kept history with a user message", () => {
    const cost = (messages: ReadonlyArray<ChatMessage>) => messages.reduce((sum, m) => sum + estimateTokens(m), 0)
    // Room for the last three messages: q2, a2, q3.
    const budget = cost(history.slice(2)) + 1
    expect(fitToContext(null, history, budget).map((m) => m.content.split(" ")[0])).toEqual(["q2", "a2", "q3"])
    // Room for a2 and q3 only: a2 would open the history, so it goes too.
    const tight = cost(history.slice(3)) + 1
    expect(fitToContext(null, history, tight).map((m) => m.content.split(" ")[0])).toEqual(["q3"])
  })

  it("always keeps the last message, even when it alone is over the budget", () => {
    expect(fitToContext("system", history, 1).map((m) => m.content.split(" ")[0])).toEqual(["system", "q3"])
  })

  it("keeps room for the answer: the preset's maxTokens, else a quarter of the window up to 1,024", () => {
    expect(answerReserve(8192, 300)).toBe(300)
    expect(answerReserve(8192, null)).toBe(1024)
    expect(answerReserve(2048, null)).toBe(512)
  })
})

describe("reading only the branch that can be sent", () => {
  // A branch as stored, root first: questions and answers of varied lengths, one answer empty
  // (cut short before its first chunk), which is not sent.
  const branch = Array.from({ length: 40 }, (_, i) =>
    ({
      role: i % 2 === 0 ? "user" : "assistant",
      content: i === 13 ? "" : `m${i} ${"word ".repeat((i * 7) % 23)}`.trim(),
      toolCalls: [],
      metadata: {}
    }) as unknown as MessageView)

  it("stops only once what was read, from the end up, holds more than fitToContext keeps", () => {
    for (const systemPrompt of [null, "Be brief and precise."]) {
      for (const budget of [1, 20, 60, 150, 400, 10_000]) {
        const whole = fitToContext(systemPrompt, toChatMessages(branch), budget)
        const enough = fillsContext(systemPrompt, budget)
        let stoppedAt: number | null = null
        for (let read = 1; read <= branch.length; read++) {
          const newestFirst = branch.slice(-read).reverse()
          if (!enough(newestFirst)) continue
          stoppedAt ??= read
          // What was read is enough: fitting it gives what fitting the whole branch gives.
          expect(fitToContext(systemPrompt, toChatMessages(branch.slice(-read)), budget)).toEqual(whole)
        }
        // A budget the whole branch fits in never stops the reading; a small one stops it early.
        if (budget === 10_000) expect(stoppedAt).toBeNull()
        if (budget <= 60) expect(stoppedAt).not.toBeNull()
      }
    }
  })
})

describe("titles", () => {
  it("takes the first line of the model's answer, without quotes, labels or a final period", () => {
    expect(cleanTitle("\"Planning a trip to Lisbon.\"\nSome explanation")).toBe("Planning a trip to Lisbon")
    expect(cleanTitle("Title: Sourdough basics")).toBe("Sourdough basics")
    expect(cleanTitle("**Rust lifetimes**")).toBe("Rust lifetimes")
    expect(cleanTitle("x".repeat(200))).toHaveLength(80)
  })

  it("falls back to the question's first line, shortened", () => {
    expect(fallbackTitle("How do I bake bread?\nI have flour.")).toBe("How do I bake bread?")
    const long = fallbackTitle("a ".repeat(100))
    expect(long.length).toBeLessThanOrEqual(60)
    expect(long.endsWith("…")).toBe(true)
  })
})

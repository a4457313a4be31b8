/**
 * The knowledge graph over real HTTP, on both dialects: extractions run by the job queue against a
 * loopback OpenAI-compatible model that answers JSON; what it names merged into the user's graph,
 * searched, read with relationships and sources, replaced when a source is read again, deleted;
 * isolation between users; malformed findings dropped.
 */
import { describe, expect, layer } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import type { FileId, LlmModelId } from "../src/Domain/Ids.js"
import { call, createKey, expectStatus, signUp, type TestUser } from "./fixtures/Auth.js"
import { conversationWith, uploadOne } from "./fixtures/Content.js"
import { dialects } from "./fixtures/Database.js"
import { docxOf, officeTypes, pptxOf, wordParagraph } from "./fixtures/Documents.js"
import { openEvents } from "./fixtures/Events.js"
import { chatPath, type FakeProvider, fakeProvider, registerFake } from "./fixtures/Providers.js"
import { as, failureTag, overHttp, overWebSocket } from "./fixtures/Rpc.js"
import { backgroundWorkEnv, TestServer, testServer } from "./fixtures/Server.js"

interface Cast {
  readonly admin: TestUser
  readonly openai: FakeProvider
  readonly modelId: string
}

class TheCast extends Context.Tag("test/Graph/Cast")<TheCast, Cast>() {}

const withCast = (dialect: (typeof dialects)[number]) =>
  Layer.scoped(
    TheCast,
    Effect.gen(function*() {
      const admin = yield* signUp()
      const openai = yield* fakeProvider("openai", [{ name: "gpt-graph" }])
      const { models } = yield* registerFake(admin, openai, { connectTimeoutMs: 1_000, requestTimeoutMs: 2_000 })
      return { admin, openai, modelId: models["gpt-graph"]! }
    })
  ).pipe(Layer.provideMerge(testServer({
    dialect,
    env: backgroundWorkEnv
  })))

/** The model's next answers: one JSON document, split in two chunks as a stream would. */
const modelFinds = (openai: FakeProvider, findings: unknown) => {
  const text = `Here is the graph:\n${JSON.stringify(findings)}`
  openai.faults.clear()
  openai.chat = { text: [text.slice(0, 20), text.slice(20)] }
}

const lovelace = {
  entities: [
    { name: "Ada Lovelace", type: "Person", description: "Wrote the first program.", confidence: 0.95 },
    { name: "Analytical Engine", type: "product", description: "A mechanical computer.", confidence: 0.9 },
    { name: "Charles Babbage", type: "person", description: "Designed the engine.", confidence: 1.7 },
    { name: "", type: "person" },
    { name: "No type" }
  ],
  relationships: [
    { source: "Ada Lovelace", target: "Analytical Engine", type: "wrote programs for", confidence: 0.8 },
    { source: "charles babbage", target: "Analytical Engine", type: "designed", confidence: 0.9 },
    { source: "Ada Lovelace", target: "Someone else", type: "knew", confidence: 0.5 }
  ]
}

/** A conversation of the user's with two messages. */
const extract = (user: TestUser, body: Record<string, unknown>) =>
  Effect.gen(function*() {
    const queued = expectStatus(yield* call("POST", "/api/v1/graph/extractions", { auth: user.accessToken, body }), 202)
    expect(queued.status).toBe("pending")
    for (let i = 0; i < 300; i++) {
      const current = expectStatus(
        yield* call("GET", `/api/v1/graph/extractions/${queued.id}`, { auth: user.accessToken }),
        200
      )
      if (current.status === "complete" || current.status === "error") return current
      yield* Effect.sleep("50 millis")
    }
    return yield* Effect.dieMessage("the extraction did not end within 15 s")
  })

const search = (user: TestUser, query: string) =>
  Effect.map(
    call("GET", `/api/v1/graph/entities${query}`, { auth: user.accessToken }),
    (reply) => expectStatus(reply, 200)
  )

for (const dialect of dialects) {
  layer(withCast(dialect), { excludeTestServices: true })(`knowledge graph on ${dialect}`, (it) => {
    describe("extraction", () => {
      it.scoped("reads a conversation, keeps the well-formed findings, and merges them into the graph", () =>
        Effect.gen(function*() {
          const { modelId, openai } = yield* TheCast
          const user = yield* signUp()
          const conversationId = yield* conversationWith(user, [
            "Tell me about Ada Lovelace.",
            "She wrote programs for Babbage's Analytical Engine."
          ])
          modelFinds(openai, lovelace)
          const events = yield* openEvents(user.accessToken)
          yield* events.next((message) => message.type === "snapshot")
          const done = yield* extract(user, { conversationId, modelId })
          expect(yield* events.next((message) => message.type === "graph.extraction")).toEqual({
            type: "graph.extraction",
            extractionId: done.id,
            status: "complete",
            entityCount: 3,
            relationshipCount: 2,
            at: expect.any(String)
          })
          expect(done).toMatchObject({
            status: "complete",
            source: { kind: "conversation", id: conversationId },
            modelId,
            entityCount: 3,
            relationshipCount: 2,
            error: null,
            attempts: 1
          })
          const sent = openai.requests.filter((request) => request.path === chatPath.openai).at(-1)!
          expect(sent.body.messages[1].content).toBe(
            "user: Tell me about Ada Lovelace.\n\nassistant: She wrote programs for Babbage's Analytical Engine."
          )

          const all = yield* search(user, "")
          expect(all.items.map((entity: { name: string; type: string }) => [entity.name, entity.type])).toEqual([
            ["Ada Lovelace", "person"],
            ["Analytical Engine", "product"],
            ["Charles Babbage", "person"]
          ])
          const babbage = all.items.find((entity: { name: string }) => entity.name === "Charles Babbage")
          expect(babbage).toMatchObject({ confidence: 1, mentionCount: 1, description: "Designed the engine." })

          const engine = all.items.find((entity: { name: string }) => entity.name === "Analytical Engine")
          const detail = expectStatus(
            yield* call("GET", `/api/v1/graph/entities/${engine.id}`, { auth: user.accessToken }),
            200
          )
          expect(detail.relationships).toEqual([
            {
              type: "designed",
              direction: "incoming",
              entity: { id: babbage.id, name: "Charles Babbage", type: "person" },
              confidence: 0.9,
              source: { kind: "conversation", id: conversationId }
            },
            {
              type: "wrote_programs_for",
              direction: "incoming",
              entity: expect.objectContaining({ name: "Ada Lovelace" }),
              confidence: 0.8,
              source: { kind: "conversation", id: conversationId }
            }
          ])
          expect(detail.mentions).toEqual([
            expect.objectContaining({ source: { kind: "conversation", id: conversationId }, confidence: 0.9 })
          ])
        }))

      it.scoped("reading a source again replaces what it found; another source adds to the same entities", () =>
        Effect.gen(function*() {
          const { openai } = yield* TheCast
          const user = yield* signUp()
          const conversationId = yield* conversationWith(user, ["Ada and Babbage."])
          modelFinds(openai, lovelace)
          yield* extract(user, { conversationId })

          modelFinds(openai, {
            entities: [
              { name: "Ada Lovelace", type: "person", confidence: 0.6 },
              { name: "Analytical Engine", type: "product", confidence: 0.7 }
            ],
            relationships: [{ source: "Ada Lovelace", target: "Analytical Engine", type: "described", confidence: 0.7 }]
          })
          const again = yield* extract(user, { conversationId })
          expect(again).toMatchObject({ status: "complete", entityCount: 2, relationshipCount: 1 })
          const names = (yield* search(user, "")).items.map((entity: { name: string }) => entity.name)
          expect(names).toEqual(["Ada Lovelace", "Analytical Engine"])

          const file = yield* uploadOne(user.accessToken, "ada.txt", "ADA LOVELACE was a mathematician.")
          modelFinds(openai, {
            entities: [{ name: "ADA LOVELACE", type: "person", description: "A mathematician.", confidence: 0.99 }],
            relationships: []
          })
          const fromFile = yield* extract(user, { fileId: file.id })
          expect(fromFile).toMatchObject({ status: "complete", source: { kind: "file", id: file.id }, entityCount: 1 })
          const ada = (yield* search(user, "?q=lovelace")).items
          expect(ada).toEqual([
            expect.objectContaining({ name: "Ada Lovelace", mentionCount: 2, confidence: 0.99 })
          ])
          const detail = expectStatus(
            yield* call("GET", `/api/v1/graph/entities/${ada[0].id}`, { auth: user.accessToken }),
            200
          )
          expect(detail.mentions.map((mention: { source: { kind: string } }) => mention.source.kind).sort()).toEqual([
            "conversation",
            "file"
          ])
          expect(detail.relationships.map((relationship: { type: string }) => relationship.type)).toEqual(["described"])
        }))

      it.scoped("a relationship stays while a source has it; a deleted file or purged conversation takes its part back", () =>
        Effect.gen(function*() {
          const { openai } = yield* TheCast
          const user = yield* signUp()
          const auth = { auth: user.accessToken }
          const ada = { name: "Ada Lovelace", type: "person", confidence: 0.9 }
          const engine = { name: "Analytical Engine", type: "product", confidence: 0.9 }
          const babbage = { name: "Charles Babbage", type: "person", confidence: 0.9 }
          const wrote = (confidence: number) => ({
            source: "Ada Lovelace",
            target: "Analytical Engine",
            type: "wrote programs for",
            confidence
          })
          const designed = { source: "Charles Babbage", target: "Analytical Engine", type: "designed", confidence: 0.8 }
          const edgesOf = (entityName: string) =>
            Effect.gen(function*() {
              const found = (yield* search(user, `?q=${encodeURIComponent(entityName)}`)).items
              if (found.length === 0) return undefined
              const detail = expectStatus(yield* call("GET", `/api/v1/graph/entities/${found[0].id}`, auth), 200)
              return {
                mentionCount: detail.entity.mentionCount as number,
                edges: detail.relationships.map((edge: any) => ({
                  type: edge.type,
                  confidence: edge.confidence,
                  source: edge.source.kind
                }))
              }
            })

          const conversationId = yield* conversationWith(user, ["Ada wrote programs for the Engine."])
          modelFinds(openai, { entities: [ada, engine], relationships: [wrote(0.6)] })
          yield* extract(user, { conversationId })
          const file = yield* uploadOne(user.accessToken, "engine.txt", "Babbage designed it; Ada programmed it.")
          modelFinds(openai, { entities: [ada, engine, babbage], relationships: [wrote(0.9), designed] })
          yield* extract(user, { fileId: file.id })
          // Found in both: the highest confidence, last found in the file.
          expect(yield* edgesOf("Ada")).toEqual({
            mentionCount: 2,
            edges: [{ type: "wrote_programs_for", confidence: 0.9, source: "file" }]
          })

          // The file read again without it: the conversation still has it, at its own confidence.
          modelFinds(openai, { entities: [ada, engine, babbage], relationships: [designed] })
          expect(yield* extract(user, { fileId: file.id })).toMatchObject({ status: "complete", relationshipCount: 1 })
          expect(yield* edgesOf("Ada")).toEqual({
            mentionCount: 2,
            edges: [{ type: "wrote_programs_for", confidence: 0.6, source: "conversation" }]
          })

          // The file deleted: what only it found goes, the rest stays.
          expectStatus(yield* call("DELETE", `/api/v1/files/${file.id}`, auth), 204)
          expect(yield* edgesOf("Babbage")).toBeUndefined()
          expect(yield* edgesOf("Engine")).toEqual({
            mentionCount: 1,
            edges: [{ type: "wrote_programs_for", confidence: 0.6, source: "conversation" }]
          })

          // The conversation purged: nothing of it is left in the graph.
          expectStatus(yield* call("DELETE", `/api/v1/conversations/${conversationId}`, auth), 204)
          expectStatus(yield* call("POST", `/api/v1/conversations/${conversationId}/purge`, auth), 204)
          expect((yield* search(user, "")).items).toEqual([])
        }))

      it.scoped("a file deleted while the model reads it: nothing of it enters the graph", () =>
        Effect.gen(function*() {
          const { openai } = yield* TheCast
          const user = yield* signUp()
          const file = yield* uploadOne(user.accessToken, "brief.txt", "Grace Hopper wrote the first compiler.")
          modelFinds(openai, {
            entities: [{ name: "Grace Hopper", type: "person", confidence: 0.9 }],
            relationships: []
          })
          openai.chat = { ...openai.chat, firstChunkDelayMs: 1_500 }
          const asked = () => openai.requests.filter((request) => request.path === chatPath.openai).length
          const before = asked()
          const queued = expectStatus(
            yield* call("POST", "/api/v1/graph/extractions", { auth: user.accessToken, body: { fileId: file.id } }),
            202
          )
          // Deleted once the model has been asked, before it answers.
          for (let i = 0; i < 100 && asked() === before; i++) {
            yield* Effect.sleep("20 millis")
          }
          expect(asked()).toBeGreaterThan(before)
          expectStatus(yield* call("DELETE", `/api/v1/files/${file.id}`, { auth: user.accessToken }), 204)
          let ended: any
          for (let i = 0; i < 200; i++) {
            ended = expectStatus(
              yield* call("GET", `/api/v1/graph/extractions/${queued.id}`, { auth: user.accessToken }),
              200
            )
            if (ended.status === "complete" || ended.status === "error") break
            yield* Effect.sleep("50 millis")
          }
          expect(ended).toMatchObject({ status: "error", error: "The source was deleted while it was being read" })
          expect((yield* search(user, "")).items).toEqual([])
        }))

      it.scoped("reads a Word document's or a presentation's text; one that cannot be read ends as error", () =>
        Effect.gen(function*() {
          const { openai } = yield* TheCast
          const user = yield* signUp()
          const letter = docxOf(wordParagraph("Ada Lovelace wrote to Charles Babbage."))
          const docx = yield* uploadOne(user.accessToken, "letter.docx", letter, officeTypes.docx)
          modelFinds(openai, lovelace)
          const done = yield* extract(user, { fileId: docx.id })
          expect(done).toMatchObject({ status: "complete", source: { kind: "file", id: docx.id }, entityCount: 3 })
          const sent = () => openai.requests.filter((request) => request.path === chatPath.openai).at(-1)!.body
          expect(sent().messages[1]).toEqual({ role: "user", content: "Ada Lovelace wrote to Charles Babbage." })

          const talk = yield* uploadOne(
            user.accessToken,
            "talk.pptx",
            pptxOf([["The Analytical Engine"]]),
            officeTypes.pptx
          )
          modelFinds(openai, lovelace)
          expect(yield* extract(user, { fileId: talk.id })).toMatchObject({ status: "complete" })
          expect(sent().messages[1]).toEqual({ role: "user", content: "Slide 1\nThe Analytical Engine" })

          const cut = yield* uploadOne(
            user.accessToken,
            "cut.docx",
            letter.subarray(0, letter.length - 40),
            officeTypes.docx
          )
          const failed = yield* extract(user, { fileId: cut.id })
          expect(failed).toMatchObject({ status: "error", attempts: 1, error: "The source is gone or unreadable" })
        }))

      it.scoped("a model that keeps failing ends the extraction as error; a bad request changes nothing", () =>
        Effect.gen(function*() {
          const { openai } = yield* TheCast
          const user = yield* signUp()
          const other = yield* signUp()
          const conversationId = yield* conversationWith(user, ["Something."])
          openai.faults.set(chatPath.openai, { kind: "status", status: 500 })
          const failed = yield* extract(user, { conversationId })
          openai.faults.clear()
          expect(failed).toMatchObject({ status: "error", attempts: 2, entityCount: 0 })
          expect(failed.error).toMatch(/^The model could not be reached/)

          const post = (auth: TestUser, body: unknown) =>
            call("POST", "/api/v1/graph/extractions", { auth: auth.accessToken, body })
          expect((yield* post(user, {})).status).toBe(422)
          expect((yield* post(user, { conversationId, fileId: conversationId })).status).toBe(422)
          expect((yield* post(other, { conversationId })).status).toBe(404)
          expect((yield* search(user, "")).items).toEqual([])
        }))
    })

    describe("untidy findings", () => {
      it.scoped("types that lengthen when lower-cased and NUL characters are tidied, not failed on", () =>
        Effect.gen(function*() {
          const { openai } = yield* TheCast
          const user = yield* signUp()
          modelFinds(openai, {
            entities: [{ name: "Ist\u0000anbul", type: "İ".repeat(30), description: "A city\u0000.", confidence: 1 }],
            relationships: []
          })
          const done = yield* extract(user, { conversationId: yield* conversationWith(user, ["Istanbul."]) })
          expect(done).toMatchObject({ status: "complete", entityCount: 1 })
          const [entity] = (yield* search(user, "")).items
          expect(entity.name).toBe("Istanbul")
          expect(entity.description).toBe("A city.")
          expect(entity.type.length).toBeLessThanOrEqual(50)
          const bad = Buffer.from(JSON.stringify({ name: "a", id: "not-a-uuid" })).toString("base64url")
          expect((yield* call("GET", `/api/v1/graph/entities?cursor=${bad}`, { auth: user.accessToken })).status)
            .toBe(422)
        }))

      it.scoped("the personal-data export holds the graph and its extractions", () =>
        Effect.gen(function*() {
          const { openai } = yield* TheCast
          const user = yield* signUp()
          modelFinds(openai, lovelace)
          const done = yield* extract(user, { conversationId: yield* conversationWith(user, ["Ada."]) })
          const exported = yield* call("GET", "/api/v1/me/export", { auth: user.accessToken })
          const graph = expectStatus(exported, 200).graph
          expect(graph.entities.map((entity: { name: string }) => entity.name).sort()).toEqual([
            "Ada Lovelace",
            "Analytical Engine",
            "Charles Babbage"
          ])
          expect(graph.relationships).toHaveLength(2)
          expect(graph.extractions).toEqual([expect.objectContaining({ id: done.id, status: "complete" })])
        }))

      it.scoped("reading a file into the graph needs files:read", () =>
        Effect.gen(function*() {
          const user = yield* signUp()
          const file = yield* uploadOne(user.accessToken, "notes.txt", "Notes.")
          const key = yield* createKey(user, ["conversations:read", "conversations:write", "models:use"])
          const refused = yield* call("POST", "/api/v1/graph/extractions", {
            auth: key.secret,
            body: { fileId: file.id }
          })
          expect(refused.status).toBe(403)
        }))
    })

    describe("over RPC", () => {
      it.scoped("files, analyses, shares, extractions and entities, over HTTP and WebSocket, with the REST API's rules", () =>
        Effect.gen(function*() {
          const { modelId, openai } = yield* TheCast
          const { baseUrl } = yield* TestServer
          const user = yield* signUp()
          const other = yield* signUp()
          for (
            const [transport, client] of [["http", yield* overHttp(baseUrl)], [
              "websocket",
              yield* overWebSocket(baseUrl)
            ]] as const
          ) {
            const uploaded = yield* uploadOne(
              user.accessToken,
              `${transport}.txt`,
              `Grace Hopper wrote a compiler (${transport}).`
            )
            const fileId = uploaded.id as FileId
            const file = yield* as(user)(client.getFile({ id: fileId }))
            expect(file.name, transport).toBe(`${transport}.txt`)
            const listed = yield* as(user)(client.listFiles({}))
            expect(listed.items.map((item) => item.id), transport).toContain(fileId)
            expect(failureTag(yield* Effect.exit(as(other)(client.getFile({ id: fileId })))), transport).toBe(
              "NotFound"
            )

            openai.faults.clear()
            openai.chat = { text: [`{"summary": "About Grace Hopper."}`] }
            const analysis = yield* as(user)(
              client.requestAnalysis({ id: fileId, analysis: { modelId: modelId as LlmModelId } })
            )
            let analysed = analysis
            for (let i = 0; i < 300 && (analysed.status === "pending" || analysed.status === "processing"); i++) {
              yield* Effect.sleep("50 millis")
              analysed = yield* as(user)(client.getAnalysis({ id: fileId, analysisId: analysis.id }))
            }
            expect(analysed, transport).toMatchObject({
              status: "complete",
              analysis: { summary: "About Grace Hopper." }
            })
            expect((yield* as(user)(client.listAnalyses({ id: fileId }))).map((item) => item.id), transport).toEqual([
              analysis.id
            ])

            const share = yield* as(user)(client.createShare({ fileId, analysisId: analysis.id }))
            expect(share, transport).toMatchObject({ kind: "analysis", targetId: analysis.id, revokedAt: null })
            expect((yield* as(user)(client.listShares({}))).items.map((item) => item.id), transport).toContain(share.id)
            expect(failureTag(yield* Effect.exit(as(other)(client.getShare({ id: share.id })))), transport)
              .toBe("NotFound")
            yield* as(user)(client.revokeShare({ id: share.id }))
            expect((yield* as(user)(client.getShare({ id: share.id }))).revokedAt, transport).not.toBeNull()

            modelFinds(openai, {
              entities: [{ name: `Grace Hopper ${transport}`, type: "person", confidence: 0.9 }],
              relationships: []
            })
            const extraction = yield* as(user)(client.requestExtraction({ fileId }))
            let extracted = extraction
            for (let i = 0; i < 300 && (extracted.status === "pending" || extracted.status === "processing"); i++) {
              yield* Effect.sleep("50 millis")
              extracted = yield* as(user)(client.getExtraction({ id: extraction.id }))
            }
            expect(extracted, transport).toMatchObject({ status: "complete", entityCount: 1 })
            const found = yield* as(user)(client.searchEntities({ q: transport }))
            expect(found.items.map((entity) => entity.name), transport).toEqual([`Grace Hopper ${transport}`])
            const entity = found.items[0]!
            const detail = yield* as(user)(client.getEntity({ id: entity.id }))
            expect(detail.mentions.map((mention) => mention.source), transport).toEqual([
              expect.objectContaining({ kind: "file", id: fileId })
            ])
            expect(failureTag(yield* Effect.exit(as(other)(client.getEntity({ id: entity.id })))), transport)
              .toBe("NotFound")
            yield* as(user)(client.deleteEntity({ id: entity.id }))
            yield* as(user)(client.deleteFile({ id: fileId }))
            expect(failureTag(yield* Effect.exit(as(user)(client.getFile({ id: fileId })))), transport).toBe("NotFound")
            expect(failureTag(yield* Effect.exit(client.listFiles({}))), transport).toBe("Unauthorized")
          }
        }))
    })

    describe("reading the graph", () => {
      it.scoped("lists the user's extractions newest first, a page at a time, and no one else's", () =>
        Effect.gen(function*() {
          const { openai } = yield* TheCast
          const user = yield* signUp()
          const other = yield* signUp()
          modelFinds(openai, lovelace)
          const ids: Array<string> = []
          for (const text of ["One.", "Two.", "Three."]) {
            ids.push((yield* extract(user, { conversationId: yield* conversationWith(user, [text]) })).id)
          }
          const first = expectStatus(
            yield* call("GET", "/api/v1/graph/extractions?limit=2", { auth: user.accessToken }),
            200
          )
          const second = expectStatus(
            yield* call("GET", `/api/v1/graph/extractions?limit=2&cursor=${first.nextCursor}`, {
              auth: user.accessToken
            }),
            200
          )
          expect([...first.items, ...second.items].map((extraction: { id: string }) => extraction.id)).toEqual(
            [...ids].reverse()
          )
          expect(first.items[0]).toMatchObject({ status: "complete", source: { kind: "conversation" } })
          expect(second.nextCursor).toBeNull()
          const theirs = expectStatus(yield* call("GET", "/api/v1/graph/extractions", { auth: other.accessToken }), 200)
          expect(theirs.items).toEqual([])
        }))

      it.scoped("search by name and type, a page at a time; entities are their owner's only; deletion", () =>
        Effect.gen(function*() {
          const { openai } = yield* TheCast
          const user = yield* signUp()
          const other = yield* signUp()
          modelFinds(openai, lovelace)
          yield* extract(user, { conversationId: yield* conversationWith(user, ["The engine."]) })

          expect((yield* search(user, "?type=person")).items.map((entity: { name: string }) => entity.name)).toEqual([
            "Ada Lovelace",
            "Charles Babbage"
          ])
          expect((yield* search(user, "?q=ENGINE")).items.map((entity: { name: string }) => entity.name)).toEqual([
            "Analytical Engine"
          ])
          expect((yield* search(user, "?q=%25")).items).toEqual([])
          // Ada 0.95, the engine 0.9, Babbage 1 (its 1.7 taken as certain).
          expect((yield* search(user, "?minConfidence=0.92")).items.map((entity: { name: string }) => entity.name))
            .toEqual(["Ada Lovelace", "Charles Babbage"])
          expect((yield* call("GET", "/api/v1/graph/entities?minConfidence=2", { auth: user.accessToken })).status)
            .toBe(422)
          const first = yield* search(user, "?limit=2")
          const second = yield* search(user, `?limit=2&cursor=${first.nextCursor}`)
          expect([...first.items, ...second.items].map((entity: { name: string }) => entity.name)).toEqual([
            "Ada Lovelace",
            "Analytical Engine",
            "Charles Babbage"
          ])
          expect(second.nextCursor).toBeNull()

          expect((yield* search(other, "")).items).toEqual([])
          const engine = first.items[1]
          expect((yield* call("GET", `/api/v1/graph/entities/${engine.id}`, { auth: other.accessToken })).status)
            .toBe(404)
          expect((yield* call("DELETE", `/api/v1/graph/entities/${engine.id}`, { auth: other.accessToken })).status)
            .toBe(404)

          expect((yield* call("DELETE", `/api/v1/graph/entities/${engine.id}`, { auth: user.accessToken })).status)
            .toBe(204)
          expect((yield* call("GET", `/api/v1/graph/entities/${engine.id}`, { auth: user.accessToken })).status)
            .toBe(404)
          const ada = first.items[0]
          const detail = expectStatus(
            yield* call("GET", `/api/v1/graph/entities/${ada.id}`, { auth: user.accessToken }),
            200
          )
          expect(detail.relationships).toEqual([])
        }))
    })
  })
}

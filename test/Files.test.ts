/**
 * Files over real HTTP: multipart uploads (type detected from the content, names sanitised, the size
 * limit enforced while reading), listing, download, deletion, isolation; and analyses run by the
 * background job queue against a loopback OpenAI-compatible provider, on both dialects, with the
 * database queue and with RabbitMQ.
 */
import { SqlClient } from "@effect/sql"
import { describe, expect, it, layer } from "@effect/vitest"
import * as Amqp from "amqplib"
import { Context, Duration, Effect, Layer } from "effect"
import * as Crypto from "node:crypto"
import * as Fs from "node:fs"
import * as Http from "node:http"
import * as Path from "node:path"
import { defaultAllowedFileTypes } from "../src/Config.js"
import { sanitizeFileName } from "../src/Files/Content.js"
import { retryDelay, sweepJobs } from "../src/Jobs.js"
import { runMigrations } from "../src/Migrations.js"
import { call, createKey, expectStatus, signUp, type TestUser } from "./fixtures/Auth.js"
import { analysisSettled, upload, uploadOne } from "./fixtures/Content.js"
import { dialects, freshDatabase, sqliteClientFor } from "./fixtures/Database.js"
import { docxOf, minimalPdf, officeTypes, pptxOf, wordParagraph, xlsxOf, zipOf } from "./fixtures/Documents.js"
import { openEvents } from "./fixtures/Events.js"
import { chatPath, type FakeProvider, fakeProvider, registerFake, upstreamSecret } from "./fixtures/Providers.js"
import { TestServer, testServer } from "./fixtures/Server.js"

interface Cast {
  readonly admin: TestUser
  readonly user: TestUser
  readonly other: TestUser
  readonly openai: FakeProvider
  readonly modelId: string
}

class TheCast extends Context.Tag("test/Files/Cast")<TheCast, Cast>() {}

const maxSize = 64 * 1024

const filesEnv = {
  FILES_MAX_SIZE: String(maxSize),
  JOBS_POLL_INTERVAL: "50 millis",
  // The 1×1 PNG below fits; the same PNG followed by padding does not.
  CHAT_IMAGE_MAX_SIZE: "200",
  JOBS_MAX_ATTEMPTS: "2",
  JOBS_RETRY_BASE_DELAY: "20 millis",
  JOBS_TIMEOUT: "1500 millis",
  CHAT_RETRY_ATTEMPTS: "0",
  CHAT_FIRST_CHUNK_TIMEOUT: "2 seconds",
  PROVIDER_BREAKER_THRESHOLD: "1000",
  MODEL_STATUS_POLL_INTERVAL: "0 seconds",
  // A ZIP archive stands for a file a model can neither read nor see.
  FILES_ALLOWED_TYPES: [...defaultAllowedFileTypes, "application/zip"].join(",")
}

const withCast = (dialect: (typeof dialects)[number], env: Record<string, string> = {}) =>
  Layer.scoped(
    TheCast,
    Effect.gen(function*() {
      const admin = yield* signUp()
      const [user, other] = yield* Effect.all([signUp(), signUp()])
      const openai = yield* fakeProvider("openai", [{ name: "gpt-files" }])
      const { models } = yield* registerFake(admin, openai, { connectTimeoutMs: 1_000, requestTimeoutMs: 2_000 })
      return { admin, user, other, openai, modelId: models["gpt-files"]! }
    })
  ).pipe(Layer.provideMerge(testServer({ dialect, env: { ...filesEnv, ...env } })))

/** The raw bytes and headers of a download. */
const download = (auth: string, id: string, headers: Record<string, string> = {}) =>
  Effect.gen(function*() {
    const { baseUrl } = yield* TestServer
    return yield* Effect.promise(async () => {
      const response = await fetch(`${baseUrl}/api/v1/files/${id}/content`, {
        headers: { authorization: `Bearer ${auth}`, "accept-encoding": "identity", ...headers }
      })
      return {
        status: response.status,
        headers: Object.fromEntries(response.headers),
        bytes: new Uint8Array(await response.arrayBuffer())
      }
    })
  })

/** The contents kept under the files directory (the scratch directory must be empty). */
const storedContents = Effect.map(TestServer, ({ dataDir }) => {
  const root = Path.join(dataDir, "files")
  const found: Array<string> = []
  for (const entry of Fs.readdirSync(root, { recursive: true, withFileTypes: true })) {
    if (entry.isFile()) found.push(Path.relative(root, Path.join(entry.parentPath, entry.name)))
  }
  return found
})

const sha256 = (content: Uint8Array | string) => Crypto.createHash("sha256").update(content).digest("hex")

/** A 1×1 PNG. */
const png = new Uint8Array(Buffer.from(
  "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==",
  "base64"
))

/** Sends a body through `node:http` in chunks without a length, and the status once the server answered. */
const rawUpload = (auth: string, boundary: string, chunks: ReadonlyArray<Buffer>) =>
  Effect.gen(function*() {
    const { baseUrl } = yield* TestServer
    return yield* Effect.async<{ status: number; body: any; sentAll: boolean }>((resume) => {
      let sent = 0
      const request = Http.request(`${baseUrl}/api/v1/files`, {
        method: "POST",
        headers: { authorization: `Bearer ${auth}`, "content-type": `multipart/form-data; boundary=${boundary}` }
      })
      request.on("response", (response) => {
        let text = ""
        response.on("data", (chunk) => (text += chunk))
        response.on("end", () =>
          resume(
            Effect.succeed({
              status: response.statusCode ?? 0,
              body: JSON.parse(text),
              sentAll: sent === chunks.length
            })
          ))
      })
      request.on("error", () => undefined)
      const next = () => {
        if (sent === chunks.length) {
          return request.end()
        }
        request.write(chunks[sent++], () => setTimeout(next, 5))
      }
      next()
    })
  })

for (const dialect of dialects) {
  layer(withCast(dialect), { excludeTestServices: true })(`files on ${dialect}`, (it) => {
    describe("upload and download", () => {
      it.scoped("stores a file under a sanitised name with its detected type, size and hash; gives it back", () =>
        Effect.gen(function*() {
          const { user } = yield* TheCast
          const content = "# Notes\n\nCafé au lait — ünïcödé.\n"
          const view = yield* uploadOne(user.accessToken, "../../etc/no<tes>.md", content, "application/x-made-up")
          expect(view).toMatchObject({
            name: "no_tes_.md",
            contentType: "text/markdown",
            sizeBytes: Buffer.byteLength(content),
            sha256: sha256(content)
          })
          expect(expectStatus(yield* call("GET", `/api/v1/files/${view.id}`, { auth: user.accessToken }), 200)).toEqual(
            view
          )
          const listed = expectStatus(yield* call("GET", "/api/v1/files", { auth: user.accessToken }), 200)
          expect(listed.items.map((item: { id: string }) => item.id)).toContain(view.id)

          const fetched = yield* download(user.accessToken, view.id)
          expect(fetched.status).toBe(200)
          expect(Buffer.from(fetched.bytes).toString()).toBe(content)
          expect(fetched.headers["content-type"]).toBe("text/markdown; charset=utf-8")
          expect(fetched.headers["content-disposition"]).toBe(
            `attachment; filename="no_tes_.md"; filename*=UTF-8''no_tes_.md`
          )
          expect(fetched.headers["x-content-type-options"]).toBe("nosniff")
          expect(fetched.headers["etag"]).toBe(`"${sha256(content)}"`)

          // A client holding that copy is told it is still the content, without it.
          for (const tag of [`"${sha256(content)}"`, `W/"${sha256(content)}"`, `"other", "${sha256(content)}"`, "*"]) {
            const cached = yield* download(user.accessToken, view.id, { "if-none-match": tag })
            expect(cached.status, tag).toBe(304)
            expect(cached.bytes.length).toBe(0)
            expect(cached.headers["etag"]).toBe(`"${sha256(content)}"`)
          }
          const changed = yield* download(user.accessToken, view.id, { "if-none-match": "\"other\"" })
          expect(changed.status).toBe(200)
          expect(Buffer.from(changed.bytes).toString()).toBe(content)
        }))

      it.scoped("keeps a name in any script, sent raw as browsers send it; the download names it", () =>
        Effect.gen(function*() {
          const { user } = yield* TheCast
          for (const name of ["Отчёт за год.txt", "完成したレポート.md", "notes 🎉 (final).txt", "Café.txt"]) {
            const view = yield* uploadOne(user.accessToken, name, `content of ${name}`)
            expect(view.name).toBe(name)
            const fetched = yield* download(user.accessToken, view.id)
            expect(Buffer.from(fetched.bytes).toString()).toBe(`content of ${name}`)
            const disposition = fetched.headers["content-disposition"]!
            expect(decodeURIComponent(disposition.split("filename*=UTF-8''")[1]!)).toBe(name)
          }
        }))

      it.scoped("decides the type from the content, not from the name or the client's claim", () =>
        Effect.gen(function*() {
          const { user } = yield* TheCast
          const image = yield* uploadOne(user.accessToken, "holiday.txt", png, "text/plain")
          expect(image.contentType).toBe("image/png")
          const text = yield* uploadOne(user.accessToken, "photo.png", "just words", "image/png")
          expect(text.contentType).toBe("text/plain")
          const fetched = yield* download(user.accessToken, image.id)
          expect(Buffer.from(fetched.bytes).equals(Buffer.from(png))).toBe(true)
          expect(fetched.headers["content-type"]).toBe("image/png")
        }))

      it.scoped("refuses a type that is not accepted with 415, and keeps nothing of it", () =>
        Effect.gen(function*() {
          const { user } = yield* TheCast
          const before = yield* storedContents
          const binary = Buffer.concat([Buffer.from([0, 1, 2, 0xff, 0xfe]), Crypto.randomBytes(2000)])
          const reply = yield* upload(user.accessToken, [{ filename: "data.txt", content: binary, type: "text/plain" }])
          expect(expectStatus(reply, 415)).toEqual({
            _tag: "UnsupportedMediaType",
            message: "Files of type application/octet-stream are not accepted",
            contentType: "application/octet-stream"
          })
          expect(yield* storedContents).toEqual(before)
          const names = expectStatus(yield* call("GET", "/api/v1/files", { auth: user.accessToken }), 200).items.map((
            item: { name: string }
          ) => item.name)
          expect(names).not.toContain("data.txt")
        }))

      it.scoped("a file over FILES_MAX_SIZE: 413, refused while it is read, nothing kept", () =>
        Effect.gen(function*() {
          const { user } = yield* TheCast
          const before = yield* storedContents
          const announced = yield* upload(user.accessToken, [{ filename: "big.txt", content: "x".repeat(maxSize + 1) }])
          expect(expectStatus(announced, 413)).toMatchObject({ _tag: "PayloadTooLarge", limitBytes: maxSize })

          // No length announced: the server stops reading at the limit and answers while the client still sends.
          const boundary = "----webplus-test"
          const head = Buffer.from(
            `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="stream.txt"\r\n` +
              `Content-Type: text/plain\r\n\r\n`
          )
          const chunks = [head, ...Array.from({ length: 40 }, () => Buffer.alloc(16 * 1024, "y"))]
          const streamed = yield* rawUpload(user.accessToken, boundary, chunks)
          expect(streamed.status).toBe(413)
          expect(streamed.body).toMatchObject({ _tag: "PayloadTooLarge", limitBytes: maxSize })
          expect(streamed.sentAll).toBe(false)
          expect(yield* storedContents).toEqual(before)

          // A file of exactly the limit is fine.
          const fits = yield* uploadOne(user.accessToken, "fits.txt", "z".repeat(maxSize))
          expect(fits.sizeBytes).toBe(maxSize)
        }))

      it.scoped("a long name is shortened to 255, its extension kept", () =>
        Effect.gen(function*() {
          const { user } = yield* TheCast
          const view = yield* uploadOne(user.accessToken, `${"é".repeat(300)}.txt`, "accents")
          expect(view.name).toBe(`${"é".repeat(251)}.txt`)
          // Characters outside the BMP count two (as the schema counts) and are never cut in half.
          const name = sanitizeFileName(`${"😀".repeat(200)}.txt`)
          expect(name.length).toBeLessThanOrEqual(255)
          expect(name.endsWith("😀.txt")).toBe(true)
          expect(Buffer.from(name, "utf8").toString("utf8")).toBe(name)
        }))

      it.scoped("malformed uploads answer 422 and keep nothing", () =>
        Effect.gen(function*() {
          const { user } = yield* TheCast
          const before = yield* storedContents
          const json = yield* call("POST", "/api/v1/files", { auth: user.accessToken, body: { file: "hello" } })
          expect(expectStatus(json, 422)._tag).toBe("ValidationError")
          const noFile = yield* upload(user.accessToken, [{ field: "comment", content: "no file here" }])
          expect(expectStatus(noFile, 422)._tag).toBe("ValidationError")
          const wrongField = yield* upload(user.accessToken, [{ field: "attachment", filename: "a.txt", content: "a" }])
          expect(expectStatus(wrongField, 422)._tag).toBe("ValidationError")
          const empty = yield* upload(user.accessToken, [{ filename: "empty.txt", content: "" }])
          expect(expectStatus(empty, 422).message).toBe("The file is empty")
          const two = yield* upload(user.accessToken, [
            { filename: "one.txt", content: "one" },
            { filename: "two.txt", content: "two" }
          ])
          expect(expectStatus(two, 422).message).toBe("Send one file per upload")
          expect(yield* storedContents).toEqual(before)
        }))

      it.scoped("credentials: 401 without, 403 for a key without files:write, 201 with it", () =>
        Effect.gen(function*() {
          const { user } = yield* TheCast
          expect((yield* upload(undefined, [{ filename: "a.txt", content: "a" }])).status).toBe(401)
          const readOnly = yield* createKey(user, ["files:read"])
          const refused = yield* upload(readOnly.secret, [{ filename: "a.txt", content: "a" }])
          expect(expectStatus(refused, 403)._tag).toBe("Forbidden")
          const writer = yield* createKey(user, ["files:read", "files:write"])
          yield* uploadOne(writer.secret, "a.txt", "a")
        }))
    })

    describe("ownership and deletion", () => {
      it.scoped("another user's file is not found, whatever they try", () =>
        Effect.gen(function*() {
          const { other, user } = yield* TheCast
          const view = yield* uploadOne(user.accessToken, "private.txt", "mine")
          const auth = other.accessToken
          expect((yield* call("GET", `/api/v1/files/${view.id}`, { auth })).status).toBe(404)
          expect((yield* download(auth, view.id)).status).toBe(404)
          expect((yield* call("DELETE", `/api/v1/files/${view.id}`, { auth })).status).toBe(404)
          expect((yield* call("POST", `/api/v1/files/${view.id}/analyses`, { auth, body: {} })).status).toBe(404)
          expect((yield* call("GET", `/api/v1/files/${view.id}/analyses`, { auth })).status).toBe(404)
          const theirs = expectStatus(yield* call("GET", "/api/v1/files", { auth }), 200)
          expect(theirs.items.map((item: { id: string }) => item.id)).not.toContain(view.id)
          expect((yield* download(user.accessToken, view.id)).status).toBe(200)
        }))

      it.scoped("deleting a file removes its row and its content", () =>
        Effect.gen(function*() {
          const { user } = yield* TheCast
          const before = yield* storedContents
          const view = yield* uploadOne(user.accessToken, "gone.txt", "soon gone")
          expect((yield* storedContents).length).toBe(before.length + 1)
          expect((yield* call("DELETE", `/api/v1/files/${view.id}`, { auth: user.accessToken })).status).toBe(204)
          expect((yield* call("GET", `/api/v1/files/${view.id}`, { auth: user.accessToken })).status).toBe(404)
          expect((yield* call("DELETE", `/api/v1/files/${view.id}`, { auth: user.accessToken })).status).toBe(404)
          expect(yield* storedContents).toEqual(before)
        }))

      it.scoped("lists newest first, a page at a time", () =>
        Effect.gen(function*() {
          const owner = yield* signUp()
          const ids: Array<string> = []
          for (let i = 0; i < 5; i++) ids.push((yield* uploadOne(owner.accessToken, `f${i}.txt`, `file ${i}`)).id)
          const seen: Array<string> = []
          let cursor: string | null = null
          do {
            const query: string = cursor === null ? "?limit=2" : `?limit=2&cursor=${cursor}`
            const page: any = expectStatus(
              yield* call("GET", `/api/v1/files${query}`, { auth: owner.accessToken }),
              200
            )
            seen.push(...page.items.map((item: { id: string }) => item.id))
            cursor = page.nextCursor
          } while (cursor !== null)
          expect(seen).toEqual([...ids].reverse())
          expect(expectStatus(yield* call("GET", "/api/v1/files/usage", { auth: owner.accessToken }), 200)).toEqual({
            files: 5,
            usedBytes: 30,
            quotaBytes: null
          })
        }))

      it.scoped("deleting the account removes the contents of its files", () =>
        Effect.gen(function*() {
          const leaving = yield* signUp()
          const before = yield* storedContents
          yield* uploadOne(leaving.accessToken, "a.txt", "a")
          yield* uploadOne(leaving.accessToken, "b.txt", "b")
          expect((yield* storedContents).length).toBe(before.length + 2)
          const deleted = yield* call("DELETE", "/api/v1/me", {
            auth: leaving.accessToken,
            body: { password: leaving.password }
          })
          expect(deleted.status, JSON.stringify(deleted.body)).toBe(204)
          expect(yield* storedContents).toEqual(before)
        }))
    })

    describe("attached to chat questions", () => {
      /** The user messages the loopback provider was last sent. */
      const lastQuestionSent = (openai: FakeProvider) => {
        const sent = openai.requests.filter((request) => request.path === chatPath.openai).at(-1)!
        return (sent.body.messages as Array<{ role: string; content: string }>).filter((message) =>
          message.role === "user"
        )
      }

      it.scoped("a question's files are sent with it, at this turn and the next; a deleted one is named as such", () =>
        Effect.gen(function*() {
          const { modelId, openai, user } = yield* TheCast
          openai.faults.clear()
          openai.chat = { text: ["Noted."] }
          const file = yield* uploadOne(user.accessToken, "recipe.md", "# Soup\n\nBoil water.")
          const conversation = expectStatus(
            yield* call("POST", "/api/v1/conversations", { auth: user.accessToken, body: { title: "Files", modelId } }),
            201
          )
          const first = expectStatus(
            yield* call("POST", `/api/v1/conversations/${conversation.id}/chat`, {
              auth: user.accessToken,
              body: { content: "What does this say?", fileIds: [file.id] }
            }),
            200
          )
          expect(first.question.content).toBe("What does this say?")
          expect(first.question.metadata.attachments).toEqual([
            { id: file.id, name: "recipe.md", contentType: "text/markdown" }
          ])
          const attachedText =
            `What does this say?\n\n<attachment name="recipe.md" type="text/markdown">\n# Soup\n\nBoil water.\n</attachment>`
          expect(lastQuestionSent(openai).map((message) => message.content)).toEqual([attachedText])

          expectStatus(
            yield* call("POST", `/api/v1/conversations/${conversation.id}/chat`, {
              auth: user.accessToken,
              body: { content: "And then?" }
            }),
            200
          )
          expect(lastQuestionSent(openai).map((message) => message.content)).toEqual([attachedText, "And then?"])

          expect((yield* call("DELETE", `/api/v1/files/${file.id}`, { auth: user.accessToken })).status).toBe(204)
          expectStatus(
            yield* call("POST", `/api/v1/conversations/${conversation.id}/chat`, {
              auth: user.accessToken,
              body: { content: "Still there?" }
            }),
            200
          )
          expect(lastQuestionSent(openai)[0]!.content).toBe(
            `What does this say?\n\n[The attached file "recipe.md" has been deleted]`
          )
        }))

      it.scoped("an edited question keeps its files: the answer after the edit is sent them", () =>
        Effect.gen(function*() {
          const { modelId, openai, user } = yield* TheCast
          openai.faults.clear()
          openai.chat = { text: ["Noted."] }
          const file = yield* uploadOne(user.accessToken, "list.txt", "eggs, flour")
          const first = expectStatus(
            yield* call("POST", "/api/v1/chat", {
              auth: user.accessToken,
              body: { content: "What do I need?", title: "Edit", modelId, fileIds: [file.id] }
            }),
            200
          )
          const conversationId = first.conversationId
          const edited = expectStatus(
            yield* call("POST", `/api/v1/conversations/${conversationId}/messages/${first.question.id}/edit`, {
              auth: user.accessToken,
              body: { content: "What do I need to buy?" }
            }),
            201
          )
          expect(edited.metadata.attachments).toEqual(first.question.metadata.attachments)
          expectStatus(
            yield* call("POST", `/api/v1/conversations/${conversationId}/continue`, {
              auth: user.accessToken,
              body: {}
            }),
            200
          )
          expect(lastQuestionSent(openai).map((message) => message.content)).toEqual([
            `What do I need to buy?\n\n<attachment name="list.txt" type="text/plain">\neggs, flour\n</attachment>`
          ])

          // New metadata that names no files drops them from the new version.
          const bare = expectStatus(
            yield* call("POST", `/api/v1/conversations/${conversationId}/messages/${first.question.id}/edit`, {
              auth: user.accessToken,
              body: { content: "Never mind the list", metadata: { attachments: [] } }
            }),
            201
          )
          expect(bare.metadata.attachments).toEqual([])
          expectStatus(
            yield* call("POST", `/api/v1/conversations/${conversationId}/continue`, {
              auth: user.accessToken,
              body: {}
            }),
            200
          )
          expect(lastQuestionSent(openai).map((message) => message.content)).toEqual(["Never mind the list"])
        }))

      it.scoped("an image is shown to the model with its question, at this turn and the next", () =>
        Effect.gen(function*() {
          const { modelId, openai, user } = yield* TheCast
          openai.faults.clear()
          openai.chat = { text: ["A pixel."] }
          const image = yield* uploadOne(user.accessToken, "pixel.png", png)
          const notes = yield* uploadOne(user.accessToken, "notes.txt", "It is red.")
          const first = expectStatus(
            yield* call("POST", "/api/v1/chat", {
              auth: user.accessToken,
              body: { content: "What is this?", title: "Image", modelId, fileIds: [image.id, notes.id] }
            }),
            200
          )
          expect(first.question.metadata.attachments.map((file: { contentType: string }) => file.contentType)).toEqual([
            "image/png",
            "text/plain"
          ])
          const shown = {
            role: "user",
            content: [
              {
                type: "text",
                text: "What is this?\n\n<attachment name=\"notes.txt\" type=\"text/plain\">\nIt is red.\n</attachment>"
              },
              {
                type: "image_url",
                image_url: { url: `data:image/png;base64,${Buffer.from(png).toString("base64")}` }
              }
            ]
          }
          const sent = () => openai.requests.filter((request) => request.path === chatPath.openai).at(-1)!.body.messages
          expect(sent()).toEqual([shown])
          expectStatus(
            yield* call("POST", `/api/v1/conversations/${first.conversationId}/chat`, {
              auth: user.accessToken,
              body: { content: "And now?" }
            }),
            200
          )
          expect(sent()).toEqual([shown, { role: "assistant", content: "A pixel." }, {
            role: "user",
            content: "And now?"
          }])
        }))

      it.scoped("a PDF's text is sent with the question", () =>
        Effect.gen(function*() {
          const { modelId, openai, user } = yield* TheCast
          openai.faults.clear()
          openai.chat = { text: ["Read."] }
          const pdf = yield* uploadOne(user.accessToken, "memo.pdf", minimalPdf(["Memo: ship on Friday."]))
          expectStatus(
            yield* call("POST", "/api/v1/chat", {
              auth: user.accessToken,
              body: { content: "Summarise", title: "Memo", modelId, fileIds: [pdf.id] }
            }),
            200
          )
          expect(lastQuestionSent(openai).map((message) => message.content)).toEqual([
            `Summarise\n\n<attachment name="memo.pdf" type="application/pdf">\nMemo: ship on Friday.\n</attachment>`
          ])
        }))

      it.scoped("a Word document's text is sent with the question; one that cannot be read is named as such", () =>
        Effect.gen(function*() {
          const { modelId, openai, user } = yield* TheCast
          openai.faults.clear()
          openai.chat = { text: ["Read."] }
          const letter = docxOf(wordParagraph("Dear Ada,") + wordParagraph("The engine works & so do the cards."))
          const docx = yield* uploadOne(user.accessToken, "letter.docx", letter, officeTypes.docx)
          expect(docx.contentType).toBe(officeTypes.docx)
          const sheet = yield* uploadOne(
            user.accessToken,
            "costs.xlsx",
            xlsxOf([{ name: "Costs", rows: `<row r="1"><c r="A1" t="s"><v>0</v></c><c r="B1"><v>42</v></c></row>` }], [
              "Brass"
            ]),
            officeTypes.xlsx
          )
          expectStatus(
            yield* call("POST", "/api/v1/chat", {
              auth: user.accessToken,
              body: { content: "Summarise", title: "Letter", modelId, fileIds: [docx.id, sheet.id] }
            }),
            200
          )
          expect(lastQuestionSent(openai).map((message) => message.content)).toEqual([
            `Summarise\n\n<attachment name="letter.docx" type="${officeTypes.docx}">\n` +
            `Dear Ada,\nThe engine works & so do the cards.\n</attachment>\n\n` +
            `<attachment name="costs.xlsx" type="${officeTypes.xlsx}">\nSheet: Costs\nBrass\t42\n</attachment>`
          ])

          // Its end cut off: still a Word document by its first bytes, but no archive to read.
          const cut = yield* uploadOne(
            user.accessToken,
            "cut.docx",
            letter.subarray(0, letter.length - 40),
            officeTypes.docx
          )
          expect(cut.contentType).toBe(officeTypes.docx)
          expectStatus(
            yield* call("POST", "/api/v1/chat", {
              auth: user.accessToken,
              body: { content: "And this one?", title: "Cut", modelId, fileIds: [cut.id] }
            }),
            200
          )
          expect(lastQuestionSent(openai).map((message) => message.content)).toEqual([
            `And this one?\n\n<attachment name="cut.docx" type="${officeTypes.docx}">\n` +
            `[This file could not be read]\n</attachment>`
          ])
        }))

      it.scoped("a question's metadata naming a file does not attach it: only fileIds does", () =>
        Effect.gen(function*() {
          const { modelId, openai, user } = yield* TheCast
          openai.faults.clear()
          openai.chat = { text: ["Nothing attached."] }
          const file = yield* uploadOne(user.accessToken, "private.txt", "The vault code is 1234.")
          const forged = { attachments: [{ id: file.id, name: "private.txt", contentType: "text/plain" }] }
          const chatOnly = yield* createKey(user, ["chat", "conversations:read", "conversations:write", "models:use"])
          expectStatus(
            yield* call("POST", "/api/v1/chat", {
              auth: chatOnly.secret,
              body: { content: "What is in it?", title: "Forged", modelId, metadata: forged }
            }),
            200
          )
          expect(lastQuestionSent(openai).map((message) => message.content)).toEqual(["What is in it?"])
        }))

      it.scoped("another user's file, a file without text, or no files:read: refused, nothing stored", () =>
        Effect.gen(function*() {
          const { modelId, other, user } = yield* TheCast
          const theirs = yield* uploadOne(other.accessToken, "theirs.txt", "not yours")
          const archive = yield* uploadOne(
            user.accessToken,
            "photos.zip",
            zipOf([{ name: "photo.png", content: png, method: "stored" }]),
            "application/zip"
          )
          const big = yield* uploadOne(user.accessToken, "big.png", new Uint8Array([...png, ...new Uint8Array(300)]))
          const conversation = expectStatus(
            yield* call("POST", "/api/v1/conversations", {
              auth: user.accessToken,
              body: { title: "Refused", modelId }
            }),
            201
          )
          const path = `/api/v1/conversations/${conversation.id}/chat`
          const notTheirs = yield* call("POST", path, {
            auth: user.accessToken,
            body: { content: "Read it", fileIds: [theirs.id] }
          })
          expect(expectStatus(notTheirs, 422).issues).toEqual([{ path: ["fileIds", 0], message: "No such file" }])
          const noText = yield* call("POST", path, {
            auth: user.accessToken,
            body: { content: "See", fileIds: [archive.id] }
          })
          expect(expectStatus(noText, 422).issues).toEqual([{
            path: ["fileIds", 0],
            message: "A model can neither read nor see application/zip files"
          }])
          const tooBig = yield* call("POST", path, {
            auth: user.accessToken,
            body: { content: "See", fileIds: [big.id] }
          })
          expect(expectStatus(tooBig, 422).issues).toEqual([
            { path: ["fileIds", 0], message: "Images shown to a model are at most 200 bytes" }
          ])
          const mine = yield* uploadOne(user.accessToken, "mine.txt", "mine")
          const chatOnly = yield* createKey(user, ["chat", "conversations:read", "conversations:write", "models:read"])
          const refused = yield* call("POST", path, {
            auth: chatOnly.secret,
            body: { content: "Hi", fileIds: [mine.id] }
          })
          expect(expectStatus(refused, 403)._tag).toBe("Forbidden")
          const newChat = yield* call("POST", "/api/v1/chat", {
            auth: user.accessToken,
            body: { content: "New", modelId, fileIds: [theirs.id] }
          })
          expect(newChat.status).toBe(422)
          const messages = expectStatus(
            yield* call("GET", `${path.replace("/chat", "/messages")}`, { auth: user.accessToken }),
            200
          )
          expect(messages.items).toEqual([])
        }))
    })

    describe("analyses", () => {
      it.scoped("queues an analysis (202) that a worker completes with the model's findings and the text", () =>
        Effect.gen(function*() {
          const { modelId, openai, user } = yield* TheCast
          openai.faults.clear()
          openai.chat = {
            text: [
              `{"summary": "A note on cats.", "keyPoints": ["Cats sleep"], `,
              `"topics": ["pets"], "language": "en"}`
            ]
          }
          const content = "Cats sleep for most of the day.\n"
          const file = yield* uploadOne(user.accessToken, "cats.txt", content)
          const queued = expectStatus(
            yield* call("POST", `/api/v1/files/${file.id}/analyses`, { auth: user.accessToken, body: { modelId } }),
            202
          )
          expect(queued).toMatchObject({ fileId: file.id, status: "pending", modelId, attempts: 0, completedAt: null })
          const done = yield* analysisSettled(user.accessToken, file.id, queued.id)
          expect(done).toMatchObject({
            status: "complete",
            error: null,
            attempts: 1,
            extractedText: content,
            analysis: { summary: "A note on cats.", keyPoints: ["Cats sleep"], topics: ["pets"], language: "en" }
          })
          expect(done.completedAt).not.toBeNull()
          const sent = openai.requests.filter((request) => request.path === chatPath.openai).at(-1)!
          expect(JSON.stringify(sent.body.messages)).toContain("Cats sleep for most of the day.")
          const listed = expectStatus(
            yield* call("GET", `/api/v1/files/${file.id}/analyses`, { auth: user.accessToken }),
            200
          )
          expect(listed.map((analysis: { id: string }) => analysis.id)).toEqual([queued.id])
        }))

      it.scoped("the owner's event sockets hear when an analysis ends; a files-only key may listen", () =>
        Effect.gen(function*() {
          const { openai, other, user } = yield* TheCast
          openai.faults.clear()
          openai.chat = { text: [`{"summary": "Heard."}`] }
          const key = yield* createKey(user, ["files:read"])
          const mine = yield* openEvents(key.secret)
          const theirs = yield* openEvents(other.accessToken)
          yield* mine.next((message) => message.type === "snapshot")
          yield* theirs.next((message) => message.type === "snapshot")
          const file = yield* uploadOne(user.accessToken, "heard.txt", "Something to hear about.")
          const queued = expectStatus(
            yield* call("POST", `/api/v1/files/${file.id}/analyses`, { auth: user.accessToken, body: {} }),
            202
          )
          const heard = yield* mine.next((message) => message.type === "file.analysis", "15 seconds")
          expect(heard).toEqual({
            type: "file.analysis",
            analysisId: queued.id,
            fileId: file.id,
            status: "complete",
            at: expect.any(String)
          })
          const overheard = yield* Effect.exit(
            theirs.next((message) => message.type === "file.analysis" && message.analysisId === queued.id, "300 millis")
          )
          expect(overheard._tag).toBe("Failure")
        }))

      it.scoped("the personal-data export lists the files and their analyses", () =>
        Effect.gen(function*() {
          const { openai } = yield* TheCast
          openai.faults.clear()
          openai.chat = { text: [`{"summary": "Exported."}`] }
          const owner = yield* signUp()
          const file = yield* uploadOne(owner.accessToken, "export.txt", "For the export.")
          const queued = expectStatus(
            yield* call("POST", `/api/v1/files/${file.id}/analyses`, { auth: owner.accessToken, body: {} }),
            202
          )
          yield* analysisSettled(owner.accessToken, file.id, queued.id)
          const exported = expectStatus(yield* call("GET", "/api/v1/me/export", { auth: owner.accessToken }), 200)
          expect(exported.files).toEqual([expect.objectContaining({ id: file.id, originalName: "export.txt" })])
          expect(exported.files[0]).not.toHaveProperty("storageKey")
          expect(exported.fileAnalyses).toEqual([
            expect.objectContaining({
              id: queued.id,
              fileId: file.id,
              status: "complete",
              analysis: { summary: "Exported." },
              extractedText: "For the export."
            })
          ])
        }))

      it.scoped("a PDF's text is read for its analysis (on a worker thread); a malformed PDF ends as error at once", () =>
        Effect.gen(function*() {
          const { openai, user } = yield* TheCast
          openai.faults.clear()
          openai.chat = { text: [`{"summary": "A report."}`] }
          const pdf = yield* uploadOne(
            user.accessToken,
            "report.pdf",
            minimalPdf(["Quarterly report", "Revenue grew."])
          )
          expect(pdf.contentType).toBe("application/pdf")
          const queued = expectStatus(
            yield* call("POST", `/api/v1/files/${pdf.id}/analyses`, { auth: user.accessToken, body: {} }),
            202
          )
          const done = yield* analysisSettled(user.accessToken, pdf.id, queued.id)
          expect(done).toMatchObject({
            status: "complete",
            extractedText: "Quarterly report\nRevenue grew.",
            analysis: { summary: "A report." }
          })
          const sent = openai.requests.filter((request) => request.path === chatPath.openai).at(-1)!
          expect(sent.body.messages[1].content).toBe("Document: report.pdf\n\nQuarterly report\nRevenue grew.")

          const broken = yield* uploadOne(
            user.accessToken,
            "broken.pdf",
            Buffer.concat([Buffer.from("%PDF-1.7\n"), Crypto.randomBytes(3000)])
          )
          expect(broken.contentType).toBe("application/pdf")
          const failing = expectStatus(
            yield* call("POST", `/api/v1/files/${broken.id}/analyses`, { auth: user.accessToken, body: {} }),
            202
          )
          const failed = yield* analysisSettled(user.accessToken, broken.id, failing.id)
          expect(failed).toMatchObject({ status: "error", attempts: 1, error: "The file's text could not be read" })
        }))

      it.scoped("Word, Excel and PowerPoint files' text is read for their analyses; a damaged one ends as error at once", () =>
        Effect.gen(function*() {
          const { openai, user } = yield* TheCast
          openai.faults.clear()
          openai.chat = { text: [`{"summary": "A document."}`] }
          const documents = [
            {
              name: "minutes.docx",
              type: officeTypes.docx,
              content: docxOf(
                wordParagraph("Minutes") + `<w:p><w:r><w:t>Present:</w:t><w:tab/><w:t>Ada</w:t></w:r></w:p>`
              ),
              text: "Minutes\nPresent:\tAda"
            },
            {
              name: "budget.xlsx",
              type: officeTypes.xlsx,
              content: xlsxOf([{
                name: "2025",
                rows: `<row r="1"><c r="A1" t="s"><v>0</v></c><c r="B1" t="s"><v>1</v></c></row>` +
                  `<row r="2"><c r="A2" t="inlineStr"><is><t>Rent</t></is></c><c r="B2"><v>1200</v></c></row>`
              }], ["Item", "Amount"]),
              text: "Sheet: 2025\nItem\tAmount\nRent\t1200"
            },
            {
              name: "talk.pptx",
              type: officeTypes.pptx,
              content: pptxOf([["The engine"], ["How it works", "Cards & gears"]]),
              text: "Slide 1\nThe engine\n\nSlide 2\nHow it works\nCards & gears"
            }
          ]
          for (const document of documents) {
            const file = yield* uploadOne(user.accessToken, document.name, document.content, document.type)
            expect(file.contentType).toBe(document.type)
            const queued = expectStatus(
              yield* call("POST", `/api/v1/files/${file.id}/analyses`, { auth: user.accessToken, body: {} }),
              202
            )
            const done = yield* analysisSettled(user.accessToken, file.id, queued.id)
            expect(done).toMatchObject({
              status: "complete",
              extractedText: document.text,
              analysis: { summary: "A document." }
            })
            const sent = openai.requests.filter((request) => request.path === chatPath.openai).at(-1)!
            expect(sent.body.messages[1].content).toBe(`Document: ${document.name}\n\n${document.text}`)
          }

          // Detected as a Word document by its first part, its main part's data damaged.
          const whole = docxOf(wordParagraph("Unreadable in the end."), { method: "stored" })
          const damaged = Buffer.from(whole)
          damaged.write("Unreadable in the END.", damaged.indexOf("Unreadable in the end."))
          const broken = yield* uploadOne(user.accessToken, "broken.docx", damaged, officeTypes.docx)
          expect(broken.contentType).toBe(officeTypes.docx)
          const failing = expectStatus(
            yield* call("POST", `/api/v1/files/${broken.id}/analyses`, { auth: user.accessToken, body: {} }),
            202
          )
          const failed = yield* analysisSettled(user.accessToken, broken.id, failing.id)
          expect(failed).toMatchObject({ status: "error", attempts: 1, error: "The file's text could not be read" })
        }))

      it.scoped("an answer that is not JSON is kept as the summary", () =>
        Effect.gen(function*() {
          const { openai, user } = yield* TheCast
          openai.faults.clear()
          openai.chat = { text: ["Just a plain ", "summary."] }
          const file = yield* uploadOne(user.accessToken, "plain.txt", "Some text.")
          const queued = expectStatus(
            yield* call("POST", `/api/v1/files/${file.id}/analyses`, { auth: user.accessToken, body: {} }),
            202
          )
          const done = yield* analysisSettled(user.accessToken, file.id, queued.id)
          expect(done).toMatchObject({ status: "complete", analysis: { summary: "Just a plain summary." } })
        }))

      it.scoped("a provider that keeps failing: retried by the queue, then error with the reason", () =>
        Effect.gen(function*() {
          const { openai, user } = yield* TheCast
          openai.faults.set(chatPath.openai, { kind: "status", status: 500, body: { error: upstreamSecret } })
          const file = yield* uploadOne(user.accessToken, "unlucky.txt", "Bad luck.")
          const queued = expectStatus(
            yield* call("POST", `/api/v1/files/${file.id}/analyses`, { auth: user.accessToken, body: {} }),
            202
          )
          const done = yield* analysisSettled(user.accessToken, file.id, queued.id)
          openai.faults.clear()
          expect(done).toMatchObject({ status: "error", attempts: 2, analysis: {}, extractedText: null })
          expect(done.error).toMatch(/^The model could not be reached/)
          expect(done.error).not.toContain(upstreamSecret)
          // Counted: the first attempt retried, the second given up.
          const metrics = yield* call("GET", "/metrics")
          expect(metrics.body).toMatch(/^webplus_jobs_total\{queue="file-analysis",outcome="retried"\} [1-9]/m)
          expect(metrics.body).toMatch(/^webplus_jobs_total\{queue="file-analysis",outcome="given up"\} [1-9]/m)
          expect(metrics.body).toMatch(/^webplus_job_duration_seconds_count\{queue="file-analysis"\} [1-9]/m)
        }))

      it.scoped("an attempt that runs past JOBS_TIMEOUT is tried again, then the analysis ends as error", () =>
        Effect.gen(function*() {
          const { openai, user } = yield* TheCast
          // The answer starts, then stalls (well within the provider's own idle timeout).
          openai.faults.clear()
          openai.chat = { text: ["Thinking", "…"], fault: { kind: "stall", afterChunks: 1, ms: 5_000 } }
          const file = yield* uploadOne(user.accessToken, "slow.txt", "Take your time.")
          const queued = expectStatus(
            yield* call("POST", `/api/v1/files/${file.id}/analyses`, { auth: user.accessToken, body: {} }),
            202
          )
          const done = yield* analysisSettled(user.accessToken, file.id, queued.id)
          openai.chat = { text: ["Hello"] }
          expect(done).toMatchObject({ status: "error", attempts: 2 })
          expect(done.error).toMatch(/^It did not finish within 1s 500ms/)
        }))

      it.scoped("files without readable text, and unknown models, are refused at once (422)", () =>
        Effect.gen(function*() {
          const { user } = yield* TheCast
          const image = yield* uploadOne(user.accessToken, "image.png", png, "image/png")
          const refused = yield* call("POST", `/api/v1/files/${image.id}/analyses`, {
            auth: user.accessToken,
            body: {}
          })
          expect(expectStatus(refused, 422).message).toBe(
            "Text cannot be read from image/png files: analyses cover text, PDF, Word, Excel and PowerPoint files"
          )
          const text = yield* uploadOne(user.accessToken, "t.txt", "text")
          const unknown = yield* call("POST", `/api/v1/files/${text.id}/analyses`, {
            auth: user.accessToken,
            body: { modelId: "0190a4b5-0000-7000-8000-000000000000" }
          })
          expect(expectStatus(unknown, 422).issues).toEqual([{ path: ["modelId"], message: "No such model" }])
          const none = expectStatus(
            yield* call("GET", `/api/v1/files/${text.id}/analyses`, { auth: user.accessToken }),
            200
          )
          expect(none).toEqual([])
        }))
    })
  })
}

describe("retries of background jobs", () => {
  it("wait longer at each attempt, up to the limit, with jitter", () => {
    const jobs = { retryBaseDelay: Duration.millis(100), retryMaxDelay: Duration.seconds(1) }
    for (let i = 0; i < 50; i++) {
      const first = Duration.toMillis(retryDelay(jobs, 0))
      const third = Duration.toMillis(retryDelay(jobs, 2))
      const late = Duration.toMillis(retryDelay(jobs, 12))
      expect(first).toBeGreaterThanOrEqual(75)
      expect(first).toBeLessThanOrEqual(125)
      expect(third).toBeGreaterThanOrEqual(300)
      expect(third).toBeLessThanOrEqual(500)
      expect(late).toBeGreaterThanOrEqual(750)
      expect(late).toBeLessThanOrEqual(1250)
    }
  })
})

for (const dialect of dialects) {
  layer(withCast(dialect, { FILES_QUOTA_PER_USER: "100" }), { excludeTestServices: true })(
    `a storage quota on ${dialect}`,
    (it) => {
      it.scoped("each user stores up to FILES_QUOTA_PER_USER bytes; past it 413 and nothing kept; deleting frees room", () =>
        Effect.gen(function*() {
          const user = yield* signUp()
          const other = yield* signUp()
          const usage = (auth: string) =>
            Effect.map(call("GET", "/api/v1/files/usage", { auth }), (reply) => expectStatus(reply, 200))
          const first = yield* uploadOne(user.accessToken, "sixty.txt", "x".repeat(60))
          expect(yield* usage(user.accessToken)).toEqual({ files: 1, usedBytes: 60, quotaBytes: 100 })

          const before = yield* storedContents
          const refused = yield* upload(user.accessToken, [{ filename: "fifty.txt", content: "y".repeat(50) }])
          expect(expectStatus(refused, 413)).toEqual({
            _tag: "PayloadTooLarge",
            message: "The file exceeds the space left in your storage quota (40 of 100 bytes)",
            limitBytes: 40
          })
          expect(yield* storedContents).toEqual(before)
          expect(yield* usage(user.accessToken)).toEqual({ files: 1, usedBytes: 60, quotaBytes: 100 })
          // Another user has a quota of their own.
          yield* uploadOne(other.accessToken, "fifty.txt", "z".repeat(50))

          expectStatus(yield* call("DELETE", `/api/v1/files/${first.id}`, { auth: user.accessToken }), 204)
          yield* uploadOne(user.accessToken, "fifty.txt", "y".repeat(50))
          expect(yield* usage(user.accessToken)).toEqual({ files: 1, usedBytes: 50, quotaBytes: 100 })
        }))
    }
  )
}

for (const dialect of dialects) {
  layer(freshDatabase(dialect), { excludeTestServices: true })(`the database queue's sweep on ${dialect}`, (it) => {
    it.effect("removes the jobs that ended (done or given up) before the retention, and nothing else", () =>
      Effect.gen(function*() {
        yield* runMigrations
        const sql = yield* SqlClient.SqlClient
        const ago = (days: number) =>
          sql.onDialectOrElse({
            pg: () => sql`NOW() - make_interval(days => ${days})`,
            orElse: () => sql`datetime('now', ${`-${days} days`})`
          })
        const rows: ReadonlyArray<readonly [string, boolean, number, number]> = [
          ["old-done", true, 1, 10],
          ["old-given-up", false, 3, 10],
          ["old-pending", false, 1, 10],
          ["new-done", true, 1, 0],
          ["new-given-up", false, 3, 0]
        ]
        for (const [id, completed, attempts, days] of rows) {
          yield* sql`INSERT INTO job_queue (id, queue_name, element, completed, attempts, created_at, updated_at)
                     VALUES (${id}, 'test', '{}', ${
            sql.onDialectOrElse({ pg: () => completed, orElse: () => (completed ? 1 : 0) })
          }, ${attempts}, ${ago(days)}, ${ago(days)})`
        }
        expect(yield* sweepJobs(Duration.days(7), 3)).toBe(2)
        const left = yield* sql<{ readonly id: string }>`SELECT id FROM job_queue ORDER BY id`
        expect(left.map((row) => row.id)).toEqual(["new-done", "new-given-up", "old-pending"])
      }))
  })
}

/** RabbitMQ holds the queue when `AMQP_URL` is set; the analysis is run the same way. */
const amqpUrl = process.env.TEST_AMQP_URL ?? "amqp://guest:guest@127.0.0.1:5672"
const amqpPrefix = `webplus-test-${Crypto.randomBytes(5).toString("hex")}.`

/** Removes the run's queues from the broker once the server is gone. */
const brokerCleanup = Layer.scopedDiscard(Effect.addFinalizer(() =>
  Effect.promise(async () => {
    const connection = await Amqp.connect(amqpUrl)
    const channel = await connection.createChannel()
    for (const queue of [`${amqpPrefix}file-analysis`, `${amqpPrefix}file-analysis.failed`]) {
      await channel.deleteQueue(queue)
    }
    await connection.close()
  })
))

layer(
  withCast("sqlite", { AMQP_URL: amqpUrl, AMQP_QUEUE_PREFIX: amqpPrefix }).pipe(Layer.provideMerge(brokerCleanup)),
  { excludeTestServices: true }
)("files with the job queue on RabbitMQ", (it) => {
  it.scoped("an analysis is queued on RabbitMQ, not in the database, and completed", () =>
    Effect.gen(function*() {
      const { openai, user } = yield* TheCast
      const { dataDir } = yield* TestServer
      openai.chat = { text: [`{"summary": "Queued through the broker."}`] }
      const file = yield* uploadOne(user.accessToken, "broker.txt", "Through RabbitMQ.")
      const queued = expectStatus(
        yield* call("POST", `/api/v1/files/${file.id}/analyses`, { auth: user.accessToken, body: {} }),
        202
      )
      const done = yield* analysisSettled(user.accessToken, file.id, queued.id)
      expect(done).toMatchObject({ status: "complete", analysis: { summary: "Queued through the broker." } })
      // The database's queue was never used; the broker's queue exists, drained.
      const rows = yield* Effect.flatMap(
        SqlClient.SqlClient,
        (sql) => sql<{ readonly n: number }>`SELECT count(*) AS n FROM job_queue`
      ).pipe(Effect.provide(sqliteClientFor(dataDir)))
      expect(rows[0]?.n).toBe(0)
      const messages = yield* Effect.promise(async () => {
        const connection = await Amqp.connect(amqpUrl)
        const channel = await connection.createChannel()
        const { messageCount } = await channel.checkQueue(`${amqpPrefix}file-analysis`)
        await connection.close()
        return messageCount
      })
      expect(messages).toBe(0)
    }))
})

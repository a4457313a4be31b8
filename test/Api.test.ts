import { OpenApi } from "@effect/platform"
import { describe, expect, it } from "@effect/vitest"
import { Validator } from "@seriousme/openapi-schema-validator"
import { Effect, Option, type Schema } from "effect"
import { WebPlusApi } from "../src/Api.js"
import { chatSocketPath, eventsPath, gatewayPrefix, rpcPath } from "../src/ApiBeside.js"
import { isRequestSchema } from "../src/Domain/Request.js"
import { TestApi } from "./fixtures/TestApi.js"

describe("the API contract", () => {
  it("declares every request schema through request(…), so a 422 lists every failing field", () => {
    for (const api of [WebPlusApi, TestApi]) {
      for (const group of Object.values(api.groups)) {
        for (const endpoint of Object.values(group.endpoints)) {
          const schemas: ReadonlyArray<Option.Option<Schema.Schema.Any>> = [
            endpoint.pathSchema,
            endpoint.urlParamsSchema,
            endpoint.payloadSchema,
            endpoint.headersSchema
          ]
          for (const schema of schemas) {
            if (Option.isSome(schema)) {
              expect(isRequestSchema(schema.value), `${group.identifier}.${endpoint.name}`).toBe(true)
            }
          }
        }
      }
    }
  })

  it.effect("its OpenAPI document is valid and describes the routes beside the REST API too", () =>
    Effect.gen(function*() {
      const spec = OpenApi.fromApi(WebPlusApi) as unknown as Record<string, any>
      const result = yield* Effect.promise(() => new Validator().validate(spec))
      expect(result.errors ?? []).toEqual([])
      // The sockets and RPC, described in words; the gateway with the schemas it decodes and encodes.
      expect(Object.keys(spec.paths[eventsPath].get.responses)).toEqual(["101", "401", "403", "426", "429"])
      expect(Object.keys(spec.paths[chatSocketPath].get.responses)).toContain("101")
      expect(Object.keys(spec.paths[rpcPath])).toEqual(["post", "get"])
      const completions = spec.paths[`${gatewayPrefix}/chat/completions`].post
      expect(completions.requestBody.content["application/json"].schema).toMatchObject({
        type: "object",
        required: ["model", "messages"]
      })
      expect(Object.keys(completions.responses)).toEqual(
        expect.arrayContaining(["200", "400", "401", "404", "429", "502", "503", "504"])
      )
      expect(completions.responses["429"].content["application/json"].schema).toMatchObject({ required: ["error"] })
      expect(spec.paths[`${gatewayPrefix}/embeddings`].post.requestBody.content["application/json"].schema)
        .toMatchObject({ type: "object", required: ["model", "input"] })
      expect(spec.paths[`${gatewayPrefix}/models`].get.responses["200"].content["application/json"].schema)
        .toMatchObject({ properties: { object: { enum: ["list"] } } })
      const messages = spec.paths[`${gatewayPrefix}/messages`].post
      expect(messages.requestBody.content["application/json"].schema).toMatchObject({
        type: "object",
        required: ["model", "max_tokens", "messages"]
      })
      expect(Object.keys(messages.responses)).toEqual(
        expect.arrayContaining(["200", "400", "401", "403", "404", "429", "502", "503", "504"])
      )
      expect(messages.responses["200"].content["text/event-stream"]).toBeDefined()
      expect(messages.responses["429"].content["application/json"].schema).toMatchObject({
        required: ["type", "error"]
      })
      expect(spec.tags.map((tag: { name: string }) => tag.name)).toEqual(
        expect.arrayContaining(["chat", "realtime", "rpc", "gateway"])
      )
    }))
})

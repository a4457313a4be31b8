import { describe, expect, it } from "@effect/vitest"
import { Option, type Schema } from "effect"
import { WebPlusApi } from "../src/Api.js"
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
})

/**
 * The REST side of the gateway: how many tokens each API key has spent. (The
 * OpenAI-compatible endpoints themselves are not part of the REST API: they
 * answer in OpenAI's error format, see `Http.ts`.)
 */
import { HttpApiEndpoint, HttpApiGroup, OpenApi } from "@effect/platform"
import { Schema } from "effect"
import { Authentication } from "../Auth/Api.js"
import { Forbidden, NotFound } from "../Domain/Errors.js"
import { ApiKeyId } from "../Domain/Ids.js"
import { request } from "../Domain/Request.js"
import { ApiKeyUsage } from "./Schemas.js"

export class UsageApi extends HttpApiGroup.make("usage")
  .add(
    HttpApiEndpoint.get("apiKeyUsage", "/api/v1/auth/api-keys/:id/usage")
      .setPath(request(Schema.Struct({ id: ApiKeyId })))
      .addSuccess(ApiKeyUsage)
      .addError(Forbidden)
      .addError(NotFound)
      .middleware(Authentication)
      .annotate(OpenApi.Summary, "Tokens spent with one of your API keys, in total and per model")
  )
  .annotate(OpenApi.Description, "Token usage reported by the providers")
{}

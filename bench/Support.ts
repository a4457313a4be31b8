/** What the benchmarks share: percentiles, and JSON requests over a keep-alive agent of their own. */
import * as Http from "node:http"

/** The value at percentile `p` of ascending `sorted` samples. */
export const percentile = (sorted: ReadonlyArray<number>, p: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN

export interface Reply {
  readonly status: number
  readonly body: string
}

/** Sends a request (a JSON body, a bearer credential) through `agent`; the status and the body as text. */
export const request = (
  agent: Http.Agent,
  url: string,
  method: string,
  options: { readonly auth?: string; readonly body?: unknown } = {}
) =>
  new Promise<Reply>((resolve, reject) => {
    const payload = options.body === undefined ? undefined : JSON.stringify(options.body)
    const req = Http.request(url, {
      method,
      agent,
      headers: {
        ...(options.auth ? { authorization: `Bearer ${options.auth}` } : {}),
        ...(payload ? { "content-type": "application/json", "content-length": Buffer.byteLength(payload) } : {})
      }
    }, (res) => {
      const chunks: Array<Buffer> = []
      res.on("data", (chunk: Buffer) => chunks.push(chunk))
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") }))
      res.on("error", reject)
    })
    req.on("error", reject)
    req.end(payload)
  })

/** The JSON body of `reply`, which must have the `expected` status (else fails naming `what`). */
export const json = async (reply: Promise<Reply>, expected: number, what: string) => {
  const { body, status } = await reply
  if (status !== expected) throw new Error(`${what}: ${status} ${body}`)
  return JSON.parse(body)
}

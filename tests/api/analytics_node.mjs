// The real @segment/analytics-node (pinned in package.json, installed by `make install`) sending to a
// funnels server, for tests/api/test_segment_node.py:
//   node tests/api/analytics_node.mjs HOST WRITE_KEY RUN
// sends identify, page and track for user `user-RUN` (the page anonymous, as `anon-RUN`), flushes, and
// prints one JSON line: each call's outcome, the requests the SDK made, and the errors it emitted.
import { Analytics } from '@segment/analytics-node'

const [host, writeKey, run] = process.argv.slice(2)
const analytics = new Analytics({ writeKey, host, flushAt: 3, flushInterval: 60000, maxRetries: 1 })

const requests = []
const errors = []
const results = []
analytics.on('http_request', (request) => requests.push(`${request.method} ${request.url}`))
analytics.on('error', (error) => errors.push(String(error.reason ?? error.code ?? error)))
const outcome = (call) => (error) => results.push({ call, error: error ? String(error.reason ?? error) : null })

analytics.identify({ userId: `user-${run}`, traits: { plan: 'pro' } }, outcome('identify'))
analytics.page({ anonymousId: `anon-${run}`, name: 'Pricing', properties: { path: '/pricing' } }, outcome('page'))
analytics.track({ userId: `user-${run}`, event: 'Signed Up', properties: { source: 'node' } }, outcome('track'))
await analytics.closeAndFlush({ timeout: 30000 })

console.log(JSON.stringify({ results, requests, errors }))

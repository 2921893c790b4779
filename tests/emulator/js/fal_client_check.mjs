// Drives fal's official JS client (@fal-ai/client) against the emulator and prints one
// JSON object of what it saw; tests/emulator/test_fal_js_client.py makes the assertions.
//
// The client hard-codes https://queue.fal.run and https://rest.fal.ai; a requestMiddleware
// (the client's own extension point) rewrites both to the emulator's queue origin. Upload
// URLs (on the storage origin) come from the emulator's answers, as they would from fal.
//
// usage: node fal_client_check.mjs CLIENT_DIR QUEUE_URL KEY
import { createRequire } from "node:module";

const [clientDir, queueUrl, key] = process.argv.slice(2);
const require = createRequire(`${clientDir}/`);
const { createFalClient, ValidationError, ApiError } = require("@fal-ai/client");

const rewrite = async (request) => ({
  ...request,
  url: request.url
    .replace("https://queue.fal.run", queueUrl)
    .replace("https://rest.fal.ai", queueUrl),
});
const fal = createFalClient({ credentials: key, requestMiddleware: rewrite });
const T2V = "luma/agent/ray/v3.2/text-to-video";
const out = {};

// Submit, poll the status, stream it to COMPLETED, fetch the result.
const submitted = await fal.queue.submit(T2V, { input: { prompt: "a red kite" } });
out.requestId = submitted.request_id;
out.firstStatus = (await fal.queue.status(T2V, { requestId: submitted.request_id })).status;
const stream = await fal.queue.streamStatus(T2V, { requestId: submitted.request_id });
const seen = [];
for await (const event of stream) seen.push(event.status);
out.streamed = seen;
out.streamDone = (await stream.done()).status;
const result = await fal.queue.result(T2V, { requestId: submitted.request_id });
out.resultRequestId = result.requestId;
out.videoUrl = result.data.video.url;

// subscribe in streaming mode runs the whole cycle.
const subscribed = await fal.subscribe(T2V, { input: { prompt: "x" }, mode: "streaming" });
out.subscribedVideo = subscribed.data.video.url;

// Cancel a queued request (the emulator under test allows one running request).
const blocker = await fal.queue.submit(T2V, { input: { prompt: "blocker" } });
const queued = await fal.queue.submit(T2V, { input: { prompt: "to cancel" } });
await fal.queue.cancel(T2V, { requestId: queued.request_id });
out.cancelled = (await fal.queue.status(T2V, { requestId: queued.request_id })).status;
out.blocker = blocker.request_id;

// A 422 from the model surfaces as ValidationError with fal's field details.
try {
  await fal.subscribe(T2V, { input: { prompt: "" } });
  out.validation = "no error";
} catch (error) {
  out.validation = error instanceof ValidationError ? error.fieldErrors[0].loc : String(error);
}
try {
  await fal.queue.submit("nobody/unknown-app", { input: {} });
  out.unknownApp = "accepted";
} catch (error) {
  out.unknownApp = error instanceof ApiError ? error.status : String(error);
}

// Uploads: small (initiate + one PUT) and multipart (over 90 MiB, 10 MiB parts).
const small = new Blob([new Uint8Array([1, 2, 3, 4])], { type: "image/png" });
out.smallUrl = await fal.storage.upload(small);
const bigBytes = new Uint8Array(91 * 1024 * 1024);
for (let i = 0; i < bigBytes.length; i += 4096) bigBytes[i] = (i / 4096) % 251;
out.bigUrl = await fal.storage.upload(new Blob([bigBytes], { type: "video/mp4" }));
out.bigSize = bigBytes.length;

process.stdout.write(JSON.stringify(out));

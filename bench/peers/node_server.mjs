// Benchmark peer: Node.js `net` with `node:crypto` HMAC, speaking protocol v1 (docs/PROTOCOL.md).
// node node_server.mjs PORT [--no-auth]; the secret comes from HMAC_ECHO_SECRET.
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import net from "node:net";
import { StringDecoder } from "node:string_decoder";

const secret = Buffer.from(process.env.HMAC_ECHO_SECRET ?? "", "utf8");
const auth = !process.argv.includes("--no-auth");

function echo(socket, first) {
  const decoder = new StringDecoder("utf8");
  const onData = (chunk) => {
    if (!socket.write(decoder.write(chunk).toUpperCase())) {
      socket.pause(); // backpressure: read no more until the client takes the echo
      socket.once("drain", () => socket.resume());
    }
  };
  if (first.length > 0) onData(first);
  socket.on("data", onData);
  socket.on("end", () => socket.end(decoder.end().toUpperCase()));
}

const server = net.createServer({ noDelay: true }, (socket) => {
  socket.on("error", () => socket.destroy());
  if (!auth) return echo(socket, Buffer.alloc(0));
  const challenge = randomBytes(32);
  socket.write(challenge);
  let answer = Buffer.alloc(0);
  const onAnswer = (chunk) => {
    answer = Buffer.concat([answer, chunk]);
    if (answer.length < 40) return;
    socket.off("data", onAnswer);
    const expected = createHmac("sha1", secret).update(challenge).digest();
    const claimed = Buffer.from(answer.subarray(0, 40).toString("latin1"), "hex");
    if (claimed.length !== 20 || !timingSafeEqual(claimed, expected)) return socket.destroy();
    echo(socket, answer.subarray(40));
  };
  socket.on("data", onAnswer);
});
server.listen({ host: "127.0.0.1", port: Number(process.argv[2]), backlog: 4096 }, () => {
  console.error("listening");
});

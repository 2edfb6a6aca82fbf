/** A small Redis client (RESP2), enough for the forwarding tests to act as many real clients. */

import { writeAll } from "../_io.ts";

/** A reply: simple strings and bulk strings as text, integers, arrays; errors throw. */
export type RespValue = string | number | null | RespValue[];

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** One connection to a Redis server, commands sent and replies read in order. */
export class RespClient {
  #conn: Deno.Conn;
  #buffer = new Uint8Array(64 * 1024);
  #start = 0;
  #end = 0;

  constructor(conn: Deno.Conn) {
    this.#conn = conn;
  }

  /** Connects to 127.0.0.1:`port`. */
  static async connect(port: number): Promise<RespClient> {
    return new RespClient(await Deno.connect({ hostname: "127.0.0.1", port }));
  }

  /** Sends one command and returns its reply. */
  async command(...args: string[]): Promise<RespValue> {
    return (await this.pipeline([args]))[0];
  }

  /** Sends every command at once, then reads their replies in order. */
  async pipeline(commands: string[][]): Promise<RespValue[]> {
    await writeAll(this.#conn, encoder.encode(commands.map(encodeCommand).join("")));
    const replies: RespValue[] = [];
    for (let i = 0; i < commands.length; i++) replies.push(await this.#reply());
    return replies;
  }

  /** Sends `args` without waiting for a reply. */
  async send(...args: string[]): Promise<void> {
    await writeAll(this.#conn, encoder.encode(encodeCommand(args)));
  }

  /** Reads one reply; null at the connection's end. */
  async nextReply(): Promise<RespValue | undefined> {
    if (!await this.#more(1)) return undefined;
    return await this.#reply();
  }

  close(): void {
    try {
      this.#conn.close();
    } catch {
      // already closed
    }
  }

  async #reply(): Promise<RespValue> {
    const line = await this.#line();
    const rest = line.slice(1);
    switch (line[0]) {
      case "+":
        return rest;
      case "-":
        throw new Error(`Redis error: ${rest}`);
      case ":":
        return Number(rest);
      case "$": {
        const length = Number(rest);
        if (length < 0) return null;
        if (!await this.#more(length + 2)) throw new Error("the connection ended inside a reply");
        const text = decoder.decode(this.#buffer.subarray(this.#start, this.#start + length));
        this.#start += length + 2;
        return text;
      }
      case "*": {
        const count = Number(rest);
        if (count < 0) return null;
        const items: RespValue[] = [];
        for (let i = 0; i < count; i++) items.push(await this.#reply());
        return items;
      }
    }
    throw new Error(`not a RESP reply: ${JSON.stringify(line)}`);
  }

  async #line(): Promise<string> {
    while (true) {
      const view = this.#buffer.subarray(this.#start, this.#end);
      const at = view.findIndex((byte, i) => byte === 0x0d && view[i + 1] === 0x0a);
      if (at >= 0) {
        const line = decoder.decode(view.subarray(0, at));
        this.#start += at + 2;
        return line;
      }
      if (!await this.#more(this.#end - this.#start + 1)) {
        throw new Error("the connection ended inside a reply");
      }
    }
  }

  /** Reads until `length` unread bytes are buffered; false if the connection ends first. */
  async #more(length: number): Promise<boolean> {
    if (this.#start + length > this.#buffer.length) {
      const bigger = new Uint8Array(Math.max(this.#buffer.length, 2 * length));
      bigger.set(this.#buffer.subarray(this.#start, this.#end));
      this.#end -= this.#start;
      this.#start = 0;
      this.#buffer = bigger;
    }
    while (this.#end - this.#start < length) {
      const n = await this.#conn.read(this.#buffer.subarray(this.#end));
      if (n === null) return false;
      this.#end += n;
    }
    return true;
  }
}

/** A command as a RESP array of bulk strings (lengths in bytes). */
export function encodeCommand(args: string[]): string {
  return `*${args.length}\r\n` +
    args.map((arg) => `$${encoder.encode(arg).length}\r\n${arg}\r\n`).join("");
}

// A stand-in for the host's `compute` interface: models are their metadata only (nothing runs).
export const MODELS = new Map();
export let opens = 0;

export class Session {
  constructor(metadata) {
    this.meta = metadata;
  }

  inputs() {
    return [];
  }

  outputs() {
    return [];
  }

  run() {
    const e = new Error('the smoke host runs no model');
    e.payload = { code: 'unsupported-operation', message: e.message };
    throw e;
  }

  metadata() {
    return this.meta;
  }
}

export function open(name) {
  opens += 1;
  const metadata = MODELS.get(name);
  if (metadata === undefined) {
    // A host call's `err` is thrown with the error record as `payload`.
    const e = new Error(`model ${name} is not granted`);
    e.payload = { code: 'not-found', message: e.message };
    throw e;
  }
  return new Session(metadata);
}

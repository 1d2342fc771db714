// A stand-in for the host's `config` interface: the smoke test sets values in CONFIG.
export const CONFIG = new Map();

export function get(key) {
  return CONFIG.get(key);
}

export function keys() {
  return [...CONFIG.keys()];
}

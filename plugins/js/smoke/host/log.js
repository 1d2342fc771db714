// A stand-in for the host's `log` interface: lines are kept for the smoke test to look at.
export const LOGS = [];

export function log(level, message) {
  LOGS.push([level, message]);
}

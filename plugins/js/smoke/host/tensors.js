// A stand-in for the host's `tensors` interface: tensors are plain bytes in JS memory.
export let reads = 0;

export class Tensor {
  constructor(dimensions, ty, data) {
    this.dims = dimensions;
    this.type = ty;
    this.data = data;
  }

  static create(dimensions, ty, data) {
    return new Tensor([...dimensions], ty, new Uint8Array(data));
  }

  dimensions() {
    return this.dims;
  }

  ty() {
    return this.type;
  }

  read() {
    reads += 1;
    return this.data;
  }
}

import { useEffect, useState } from "preact/hooks";

/** A tiny observable value shared by components (wallet state, transaction list). */
export class Store<T> {
  private listeners = new Set<(v: T) => void>();
  constructor(private value: T) {}
  get(): T {
    return this.value;
  }
  set(next: T) {
    this.value = next;
    for (const l of this.listeners) l(next);
  }
  update(fn: (v: T) => T) {
    this.set(fn(this.value));
  }
  subscribe(l: (v: T) => void): () => void {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }
}

export function useStore<T>(store: Store<T>): T {
  const [v, setV] = useState(store.get());
  useEffect(() => {
    setV(store.get());
    return store.subscribe(setV);
  }, [store]);
  return v;
}

/** Load something asynchronously; returns [value, error, reload]. */
export function useAsync<T>(fn: () => Promise<T>, deps: any[]): [T | undefined, string | undefined, () => void] {
  const [state, setState] = useState<{ v?: T; e?: string }>({});
  const [n, setN] = useState(0);
  useEffect(() => {
    let live = true;
    setState({});
    fn().then(
      (v) => live && setState({ v }),
      (e) => live && setState({ e: e?.message ?? String(e) }),
    );
    return () => {
      live = false;
    };
  }, [...deps, n]);
  return [state.v, state.e, () => setN((x) => x + 1)];
}

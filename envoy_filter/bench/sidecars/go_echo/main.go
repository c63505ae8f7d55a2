// Benchmark peer (not a test): a Go net/http echo server on a Unix socket, the
// sidecar that Envoy's stock Lua filter calls with httpCall. Every request's
// body comes back as the answer's body.
//
// Usage: go_echo <unix socket path> (the socket is replaced if it exists).
package main

import (
	"io"
	"log"
	"net"
	"net/http"
	"os"
)

func echo(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Write(body)
}

func main() {
	if len(os.Args) != 2 {
		log.Fatal("usage: go_echo <unix socket path>")
	}
	path := os.Args[1]
	os.Remove(path)
	listener, err := net.Listen("unix", path)
	if err != nil {
		log.Fatal(err)
	}
	log.Fatal(http.Serve(listener, http.HandlerFunc(echo)))
}

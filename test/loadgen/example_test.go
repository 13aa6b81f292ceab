package loadgen_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"time"

	"github.com/procswitch/supervisor/test/loadgen"
)

// Run keep-alive clients for a while, then read the outcome: failures by
// class, who answered, and the latency of the requests started in a window
// (such as the two seconds after an upgrade).
func Example() {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Worker-Pid", "4242")
		w.Write([]byte("ok"))
	}))
	defer srv.Close()

	run, err := loadgen.Start(context.Background(), loadgen.Config{
		URL:     srv.URL + "/path?from=1,2&to=3,4",
		Mode:    loadgen.KeepAlive,
		Clients: 4,
	})
	if err != nil {
		panic(err)
	}
	upgradeAt := time.Now()     // say an upgrade happened here
	run.Await(100, time.Minute) // at least 100 requests
	res := run.Stop()

	window := res.Window(upgradeAt, upgradeAt.Add(2*time.Second))
	fmt.Println("failed:", res.Failed(), res.ByClass()[loadgen.Reset])
	fmt.Println("answered by 4242:", res.ByPID()[4242] == len(res.Records))
	fmt.Println("window has requests:", window.Requests > 0, window.P99 >= window.P50)
	// Output:
	// failed: 0 0
	// answered by 4242: true
	// window has requests: true true
}

// Vary the request: each client cycles through a mix of queries, which
// Next draws per request; URL then names only the server.
func ExampleConfig_next() {
	var mu sync.Mutex
	seen := make(map[string]bool)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.URL.RequestURI()] = true
		mu.Unlock()
		w.Write([]byte("ok"))
	}))
	defer srv.Close()

	queries := []string{"/path?from=1,2&to=3,4", "/path?from=5,5&to=9,1"}
	run, err := loadgen.Start(context.Background(), loadgen.Config{
		URL:     srv.URL,
		Clients: 2,
		Next:    func(client, seq int) string { return queries[(client+seq)%len(queries)] },
	})
	if err != nil {
		panic(err)
	}
	run.Await(10, time.Minute)
	res := run.Stop()

	mu.Lock()
	defer mu.Unlock()
	fmt.Println("failed:", res.Failed())
	fmt.Println("both queries sent:", seen[queries[0]] && seen[queries[1]], len(seen))
	// Output:
	// failed: 0
	// both queries sent: true 2
}

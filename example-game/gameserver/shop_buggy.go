//go:build !fixedshop

package main

// shopRule names this build's BUY rule, for the start line.
const shopRule = "buggy shop: BUY does not check the balance"

// checkBalance is the rule BUY pays by. This is the seed's bug: it lets a
// player buy what they cannot afford, so coin can go negative. The fixed
// build (go build -tags fixedshop) has shop_fixed.go instead.
func checkBalance(coin, price int64) error {
	return nil
}

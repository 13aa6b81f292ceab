//go:build fixedshop

package main

import "errors"

// errNotEnoughCoin is this build's answer to a purchase the player cannot
// afford.
var errNotEnoughCoin = errors.New("not enough coin")

// shopRule names this build's BUY rule, for the start line.
const shopRule = "fixed shop: BUY checks the balance"

// checkBalance is the rule BUY pays by: a player cannot spend more coins
// than they have. The buggy build (without -tags fixedshop) has
// shop_buggy.go instead.
func checkBalance(coin, price int64) error {
	if coin < price {
		return errNotEnoughCoin
	}
	return nil
}

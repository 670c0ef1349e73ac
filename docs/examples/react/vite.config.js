import react from "@vitejs/plugin-react";
import { defineConfig } from "vite";

// base "./" so the built demo works from any path (the browser tests serve dist/ from a static server).
export default defineConfig({ base: "./", plugins: [react()] });

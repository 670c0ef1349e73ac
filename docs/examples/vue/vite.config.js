import vue from "@vitejs/plugin-vue";
import { defineConfig } from "vite";

// base "./" so the built demo works from any path (the browser tests serve dist/ from a static server).
export default defineConfig({ base: "./", plugins: [vue()] });
